"""`microseg experiment apply NAME`: act on a "ship ARM" decision.

Shipping an arm means: the experiment stops on the decision's date (`end`), so nobody is
assigned or withheld any more and everyone gets what the trigger sends, and the trigger sends
the winning arm's content (`variant`) on the winning arm's definition (`when`, copied from the
arm's `trigger`); an arm that won by not sending retires the trigger. The
changes are printed, or written into experiments.yml and triggers.yml with `--write` (comments
and layout kept; both files are checked again before they replace the old ones). Each
application is recorded once per decision in marts.experiment_applications (who, when, what).
"""

from __future__ import annotations

import dataclasses
import getpass
import io
import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from microseg.config import Settings, load_yaml
from microseg.errors import UsageError
from microseg.experiments.grammar import Experiment, ExperimentFile

APPLICATIONS_DDL = """create table if not exists marts.experiment_applications (
    experiment varchar not null,
    decided_on date not null,      -- the as-of date of the decision applied
    arm varchar not null,
    reasons varchar not null,      -- the decision's
    changes varchar[] not null,    -- one line per change, as printed
    written boolean not null,      -- the files were edited (--write); else left to a person
    applied_by varchar not null,
    applied_at timestamp not null,
    primary key (experiment, decided_on)
)"""


@dataclass(frozen=True)
class Change:
    path: Path
    kind: str  # experiment | trigger
    name: str
    field: str  # end | variant | when; "" retires the trigger
    before: Any
    after: Any

    def line(self) -> str:
        where = f"{self.path.name}: {self.kind} '{self.name}'"
        if self.field == "":
            return f"{where}: remove it (the arm that sent nothing won)"
        return f"{where}: {self.field}: {_shown(self.before)} -> {_shown(self.after)}"


@dataclass(frozen=True)
class Application:
    experiment: str
    decided_on: date
    decision: str
    reasons: str
    changes: tuple[Change, ...]
    written: bool
    applied_before: tuple[str, datetime] | None  # (who, when): applied already (or printed)


def _shown(value: Any) -> str:
    if isinstance(value, dict):  # a definition (when): as one line of YAML flow style
        return json.dumps(value, default=str, ensure_ascii=False)
    return "(none)" if value is None else str(value)


def changes_for(experiment: Experiment, arm_name: str, settings: Settings, decided_on: date):
    """What shipping `arm_name` changes in the files, as of the decision's date."""
    from microseg.activation import load_triggers

    changes = []
    if experiment.end > decided_on:
        changes.append(
            Change(settings.experiments_file, "experiment", experiment.name, "end",
                   experiment.end, decided_on)
        )  # fmt: skip
    arm = next((a for a in experiment.arms if a.name == arm_name), None)
    if arm is None:
        raise UsageError(
            f"experiment {experiment.name!r} has no arm {arm_name!r} any more "
            f"({settings.experiments_file.name} changed since the decision)"
        )
    if experiment.target_kind != "trigger":
        return changes
    trigger = next(t for t in load_triggers(settings.triggers_file).triggers
                   if t.name == experiment.target)  # fmt: skip
    if arm.trigger is not None:  # the arm's definition becomes the trigger's
        whens = {
            t["name"]: t["when"]
            for t in load_yaml(settings.triggers_file.read_text("utf-8"))["triggers"]
        }
        changes.append(
            Change(settings.triggers_file, "trigger", trigger.name, "when", whens[trigger.name],
                   whens[arm.trigger])
        )  # fmt: skip
    if not arm.send:
        changes.append(Change(settings.triggers_file, "trigger", trigger.name, "", None, None))
    elif arm.variant is not None and arm.variant != trigger.variant:
        changes.append(
            Change(settings.triggers_file, "trigger", trigger.name, "variant", trigger.variant,
                   arm.variant)
        )  # fmt: skip
    return changes


def apply_decision(
    settings: Settings,
    experiments: ExperimentFile,
    name: str,
    as_of: date | None = None,
    *,
    write: bool = False,
) -> Application:
    """Apply the decision of `as_of` (default: the latest) for experiment `name`."""
    from microseg.warehouse import connect, has_table

    experiment = next((e for e in experiments.experiments if e.name == name), None)
    if experiment is None:
        raise UsageError(f"no experiment {name!r} in {settings.experiments_file}")
    with connect(settings) as con:
        found = None
        if has_table(con, "marts", "experiment_decisions"):
            found = con.execute(
                """select as_of_date, decision, reasons from marts.experiment_decisions
                   where experiment = $name and as_of_date = coalesce($as_of, (
                       select max(as_of_date) from marts.experiment_decisions
                       where experiment = $name))""",
                {"name": name, "as_of": as_of},
            ).fetchone()
        if found is None:
            when = f" on {as_of}" if as_of else ""
            raise UsageError(
                f"no decision for {name}{when}: run `microseg experiment analyze {name}` first"
            )
        decided_on, decision, reasons = found
        if not decision.startswith("ship "):
            return Application(name, decided_on, decision, reasons, (), False, None)
        arm = decision.removeprefix("ship ")
        con.execute(APPLICATIONS_DDL)
        before = con.execute(
            """select applied_by, applied_at, written from marts.experiment_applications
               where experiment = ? and decided_on = ?""",
            [name, decided_on],
        ).fetchone()
        changes = tuple(changes_for(experiment, arm, settings, decided_on))
        if before is not None and (before[2] or not write):  # nothing new to do or record
            return Application(name, decided_on, decision, reasons, changes, False, before[:2])
        con.begin()  # the audit row commits only once the files are written
        con.execute(  # a printed application becomes a written one
            "delete from marts.experiment_applications where experiment = ? and decided_on = ?",
            [name, decided_on],
        )
        con.execute(
            "insert into marts.experiment_applications values (?, ?, ?, ?, ?, ?, ?, now())",
            [name, decided_on, arm, reasons, [c.line() for c in changes], write,
             getpass.getuser()],
        )  # fmt: skip
        if write:
            _write(settings, changes)
        con.commit()
    return Application(name, decided_on, decision, reasons, changes, write, None)


def _round_trip():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, order and flow style are kept
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _dumped(yaml, document) -> str:
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _write(settings: Settings, changes: tuple[Change, ...]) -> None:
    """Edit the files in place: each is written aside, both are checked together, then each
    is renamed over the old one. Retiring a trigger is left to a person (the experiment that
    targets it goes or stays with it)."""
    from microseg.experiments.grammar import load_configured_experiments

    retired = [c.line() for c in changes if c.field == ""]
    if retired:
        raise UsageError(f"not written: make this change by hand: {retired[0]}")
    yaml = _round_trip()
    texts = {}
    for path in sorted({c.path for c in changes}):
        text = path.read_text("utf-8")
        document = yaml.load(text)
        if _dumped(yaml, document) != text:
            raise UsageError(
                f"not written: {path.name} cannot be edited without changing its layout; make "
                "these changes by hand: " + "; ".join(c.line() for c in changes if c.path == path)
            )
        items = document["experiments" if path == settings.experiments_file else "triggers"]
        for change in (c for c in changes if c.path == path):
            item = next(item for item in items if item.get("name") == change.name)
            item[change.field] = change.after
        texts[path] = _dumped(yaml, document)
    asides = {path: path.with_name(f".{path.name}.applying") for path in texts}
    try:
        for path, text in texts.items():
            asides[path].write_text(text, "utf-8")
        load_configured_experiments(
            dataclasses.replace(
                settings,
                experiments_file=asides.get(settings.experiments_file, settings.experiments_file),
                triggers_file=asides.get(settings.triggers_file, settings.triggers_file),
            )
        )
        for path, aside in asides.items():
            os.replace(aside, path)
    finally:
        for aside in asides.values():
            aside.unlink(missing_ok=True)
