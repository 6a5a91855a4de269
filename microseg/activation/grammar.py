"""The trigger grammar (triggers.yml, docs/triggers.md): triggers, caps and destinations.

A trigger's condition is built from the segment grammar's building blocks and checked by the
same Checker (microseg/segments/grammar.py): `when` holds the conditions on one session (count,
dwell, session), `who` optional conditions on the person on the run date (feature, score,
cluster). The plan it yields is rendered by the same dbt macros as segments, which also compute
the moment each condition became true (models/activation/trigger_firings.sql).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.activation.webhook import url_problem
from microseg.errors import ConfigError
from microseg.privacy import consent_policy
from microseg.segments.grammar import NAME, Checker, read_definitions

CHANNELS = ("email", "onsite", "push", "webhook")
PAYLOAD_FIELDS = (
    "evidence",
    "segments",
    "scores",
    "score_explanations",
    "top_category",
    "recommendations",
)
DESTINATION_TYPES = ("files", "webhook")
CAP_PERIODS = ("session", "day", "rolling")
MAX_CAP_DAYS = 30
TRIGGER_KEYS = {
    "name", "title", "description", "owner", "purpose", "channel", "priority", "tags", "when",
    "who", "ttl_minutes", "reeligible_after_hours", "half_life_minutes", "bypass_caps",
    "payload", "destinations", "variant",
}  # fmt: skip
CAP_KEYS = {"name", "max", "per", "days", "channel", "tag"}
DESTINATION_KEYS = {
    "files": {"name", "type"},
    "webhook": {"name", "type", "url", "secret_env", "timeout_s", "max_attempts", "batch_size"},
}


@dataclass(frozen=True)
class Cap:
    """At most `max` messages per session, per calendar day (person's time zone) or per
    rolling `days`, counted over the messages in scope (a channel, a tag, or all)."""

    name: str
    max: int
    per: str
    days: int | None
    channel: str | None
    tag: str | None

    def applies_to(self, trigger: Trigger) -> bool:
        return (self.channel is None or self.channel == trigger.channel) and (
            self.tag is None or self.tag in trigger.tags
        )


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    url: str | None = None
    secret_env: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 5
    batch_size: int = 100

    def secret(self) -> str:
        """The webhook's signing secret, from the environment (never from the file)."""
        value = os.environ.get(self.secret_env or "", "")
        if not value:
            raise ConfigError(
                f"destination '{self.name}': secret_env: {self.secret_env} is not set "
                "in the environment (the webhook signing secret)"
            )
        return value


@dataclass(frozen=True)
class Trigger:
    name: str
    title: str
    owner: str
    purpose: str
    channel: str
    priority: int
    tags: tuple[str, ...]
    ttl_minutes: int
    reeligible_after_hours: int
    half_life_minutes: int
    bypass_caps: bool
    payload: tuple[str, ...]
    destinations: tuple[str, ...]
    variant: str | None  # the content variant its messages name (an experiment arm may override)
    definition_hash: str
    plan: dict[str, Any]
    score_models: tuple[str, ...]


@dataclass(frozen=True)
class TriggerFile:
    path: Path
    triggers: list[Trigger]
    caps: list[Cap]
    destinations: dict[str, Destination]


def _fields(raw: Any, allowed: set[str], label: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping")
    unknown = sorted(set(raw) - allowed, key=str)
    if unknown:
        raise ConfigError(f"{label}: {unknown[0]}: unknown field")
    return raw


def _name(raw: Any, label: str) -> str:
    if not isinstance(raw, str) or not NAME.fullmatch(raw):
        raise ConfigError(f"{label}: name {raw!r} must be lowercase letters, digits and _")
    return raw


def _text(check: Checker, raw: dict[str, Any], field: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value.strip():
        raise check.fail(field, "is required (text)")
    return value


def _names(check: Checker, raw: Any, field: str, allowed: tuple[str, ...] | None = None) -> tuple:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(
        isinstance(i, str) and NAME.fullmatch(i) for i in items
    ):
        raise check.fail(field, f"expected a list of lowercase names, got {raw!r}")
    for item in items:
        if allowed is not None and item not in allowed:
            raise check.fail(field, f"{item!r} is not one of {', '.join(allowed)}")
    return tuple(items)


def _trigger(raw: Any, index: int, destinations: dict[str, Destination]) -> Trigger:
    if not isinstance(raw, dict):
        raise ConfigError(f"triggers[{index}]: expected a mapping with name, when and channel")
    name = _name(raw.get("name"), f"triggers[{index}]")
    check = Checker(name, what="trigger", baselines=True)
    check.known_fields(raw, TRIGGER_KEYS, "trigger")
    owner = _text(check, raw, "owner")
    purpose = raw.get("purpose")
    if not isinstance(purpose, str) or not NAME.fullmatch(purpose):
        raise check.fail(
            "purpose", f"{purpose!r}: the consent purpose is required (a lowercase name)"
        )
    purposes = consent_policy().defaults
    if purpose not in purposes:
        raise check.fail("purpose", f"{purpose!r} is not a consent purpose ({', '.join(purposes)})")
    channel = raw.get("channel")
    if channel not in CHANNELS:
        raise check.fail("channel", f"{channel!r} is not one of {', '.join(CHANNELS)}")
    if "when" not in raw:
        raise check.fail("when", "is required (the conditions on one session)")
    check.blocks.append({"id": "b0", "quantifier": "each", "within_days": 1, "leaves": []})
    when = check.tree(raw["when"], "when", "session")
    who = None
    if "who" in raw:
        who = check.tree(raw["who"], "who", "person")
        if check.blocks[1:]:
            raise check.fail("who", "takes conditions on the person only (no session blocks)")
    if check.uses_clusters:
        raise check.fail("who", "cluster conditions are not available to triggers yet")
    wanted = raw.get("destinations", [])
    dests = _names(check, wanted, "destinations")
    for dest in dests:
        if dest not in destinations:
            raise check.fail("destinations", f"unknown destination {dest!r}")
    if not dests:
        raise check.fail("destinations", "is required (where the messages go)")
    bypass = raw.get("bypass_caps", False)
    if not isinstance(bypass, bool):
        raise check.fail("bypass_caps", "must be true or false")
    variant = raw.get("variant")
    if variant is not None and not isinstance(variant, str):
        raise check.fail("variant", "is text (the content variant's name)")
    definition_hash = hashlib.sha256(
        json.dumps(raw, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    priority = check.whole(raw.get("priority", 0), "priority", -1000, 1000)
    plan = {  # what trigger_firings.sql renders
        "name": name,
        "priority": priority,
        "channel": channel,
        "definition_hash": definition_hash,
        "leaves": check.blocks[0]["leaves"],
        "when": when,
        "person_leaves": check.person_leaves,
        "who": who,
        "evidence": sorted(check.evidence.items()),
    }
    return Trigger(
        name=name,
        title=str(raw.get("title", name)),
        owner=owner,
        purpose=purpose,
        channel=channel,
        priority=priority,
        tags=_names(check, raw.get("tags", []), "tags"),
        ttl_minutes=check.whole(raw.get("ttl_minutes", 24 * 60), "ttl_minutes", 1, 90 * 24 * 60),
        reeligible_after_hours=check.whole(
            raw.get("reeligible_after_hours", 24), "reeligible_after_hours", 0, 30 * 24
        ),
        half_life_minutes=check.whole(
            raw.get("half_life_minutes", 6 * 60), "half_life_minutes", 1, 90 * 24 * 60
        ),
        bypass_caps=bypass,
        payload=_names(check, raw.get("payload", ["evidence"]), "payload", PAYLOAD_FIELDS),
        destinations=dests,
        variant=variant,
        definition_hash=definition_hash,
        plan=plan,
        score_models=tuple(sorted(check.score_models)),
    )


def _cap(raw: Any, index: int) -> Cap:
    label = f"caps[{index}]"
    name = _name(raw.get("name") if isinstance(raw, dict) else None, label)
    label = f"cap '{name}'"
    _fields(raw, CAP_KEYS, label)
    check = Checker(name, what="cap")
    limit = check.whole(raw.get("max"), "max", 0, 10_000)
    per = raw.get("per")
    if per not in CAP_PERIODS:
        raise ConfigError(
            f"{label}: per: needs a window: one of {', '.join(CAP_PERIODS)} (got {per!r})"
        )
    days = None
    if per == "rolling":
        if "days" not in raw:
            raise ConfigError(f"{label}: days: a rolling cap needs its window in days")
        days = check.whole(raw["days"], "days", 1, MAX_CAP_DAYS)
    elif "days" in raw:
        raise ConfigError(f"{label}: days: only a rolling cap takes days")
    channel, tag = raw.get("channel"), raw.get("tag")
    if channel is not None and channel not in CHANNELS:
        raise ConfigError(f"{label}: channel: {channel!r} is not one of {', '.join(CHANNELS)}")
    if tag is not None and not (isinstance(tag, str) and NAME.fullmatch(tag)):
        raise ConfigError(f"{label}: tag: {tag!r} must be a lowercase name")
    return Cap(name, limit, per, days, channel, tag)


def _destination(raw: Any, index: int) -> Destination:
    name = _name(raw.get("name") if isinstance(raw, dict) else None, f"destinations[{index}]")
    label = f"destination '{name}'"
    kind = raw.get("type")
    if kind not in DESTINATION_TYPES:
        raise ConfigError(f"{label}: type: {kind!r} is not one of {', '.join(DESTINATION_TYPES)}")
    _fields(raw, DESTINATION_KEYS[kind], label)
    if kind == "files":
        return Destination(name, kind)
    url = raw.get("url")
    problem = url_problem(url) if isinstance(url, str) else "is not text"
    if problem:
        raise ConfigError(f"{label}: url: {url!r} {problem}")
    secret_env = raw.get("secret_env")
    if not isinstance(secret_env, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", secret_env):
        raise ConfigError(
            f"{label}: secret_env: name the environment variable holding the signing secret"
        )
    check = Checker(name, what="destination")
    timeout = raw.get("timeout_s", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
        raise ConfigError(f"{label}: timeout_s: must be a number of seconds from 0 to 120")
    return Destination(
        name,
        kind,
        url=url,
        secret_env=secret_env,
        timeout_s=float(timeout),
        max_attempts=check.whole(raw.get("max_attempts", 5), "max_attempts", 1, 20),
        batch_size=check.whole(raw.get("batch_size", 100), "batch_size", 1, 10_000),
    )


def _unique(items: list, what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ConfigError(f"{what} '{item.name}': name: defined twice")
        seen.add(item.name)


def load_triggers(path: Path) -> TriggerFile:
    """Read and validate a triggers file; raise ConfigError naming the file, the trigger (cap,
    destination) and the field."""
    document = read_definitions(path, "trigger")
    if not isinstance(document, dict) or not isinstance(document.get("triggers"), list):
        raise ConfigError(f"{path}: expected a top-level `triggers:` list")
    unknown = sorted(set(document) - {"triggers", "caps", "destinations"}, key=str)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown top-level field")
    try:
        raw_dests = document.get("destinations") or []
        raw_caps = document.get("caps") or []
        if not isinstance(raw_dests, list) or not isinstance(raw_caps, list):
            raise ConfigError("caps and destinations: expected lists")
        destinations = [_destination(raw, i) for i, raw in enumerate(raw_dests)]
        _unique(destinations, "destination")
        by_name = {d.name: d for d in destinations}
        caps = [_cap(raw, i) for i, raw in enumerate(raw_caps)]
        _unique(caps, "cap")
        triggers = [_trigger(raw, i, by_name) for i, raw in enumerate(document["triggers"])]
        _unique(triggers, "trigger")
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
    return TriggerFile(path, triggers, caps, by_name)
