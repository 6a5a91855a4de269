"""Consent by purpose: which purposes exist, their defaults, and the purpose each step acts under.

dbt_project.yml's vars are the one source (consent_purposes, consent_purpose_of): dbt builds
marts.consent_ledger and marts.consent_periods from them, and the warehouse macro
marts.has_consent(person_id, purpose, as_of) that Python steps call. This module only reads
and checks the configuration, so a wrong purpose name is a one-line error before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from microseg.config import DBT_PROJECT_DIR, dbt_project_vars
from microseg.errors import ConfigError

STATES = ("granted", "denied")  # what a purpose's default may be
USES = ("segments", "scores", "experiments", "exports", "recommendations")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class ConsentPolicy:
    """Purposes with the state of people who never stated one, and each use's purpose."""

    defaults: dict[str, str]
    purpose_of: dict[str, str]

    def check(self, purpose: str, where: str) -> str:
        """`purpose` if it is configured; else a ConfigError naming `where` it was asked for."""
        if purpose not in self.defaults:
            raise ConfigError(
                f"{where}: purpose {purpose!r} is not a consent purpose "
                f"(dbt_project.yml var consent_purposes: {', '.join(self.defaults)})"
            )
        return purpose


def consent_policy(dbt_project_dir: Path = DBT_PROJECT_DIR) -> ConsentPolicy:
    """The checked consent vars of dbt_project.yml."""
    variables = dbt_project_vars(dbt_project_dir)
    where = "dbt_project.yml var consent_purposes"
    defaults = variables.get("consent_purposes")
    if not isinstance(defaults, dict) or not defaults:
        raise ConfigError(f"{where}: a mapping of purpose -> default state is required")
    for purpose, state in defaults.items():
        if not isinstance(purpose, str) or not NAME.fullmatch(purpose):
            raise ConfigError(f"{where}: {purpose!r} is not a purpose name (lowercase, _)")
        if state not in STATES:
            raise ConfigError(f"{where}: {purpose}: default {state!r} is not granted or denied")
    purpose_of = variables.get("consent_purpose_of") or {}
    policy = ConsentPolicy(defaults=dict(defaults), purpose_of=dict(purpose_of))
    for use in USES:
        if use not in purpose_of:
            raise ConfigError(f"dbt_project.yml var consent_purpose_of: {use!r} is missing")
        policy.check(purpose_of[use], f"dbt_project.yml var consent_purpose_of: {use}")
    return policy
