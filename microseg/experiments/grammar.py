"""The experiment grammar (experiments.yml, docs/experiments.md): metrics, experiments, holdout.

Checked before anything runs, one line naming the file, the experiment (or metric) and the
field: arms whose weights do not sum to 1 or without exactly one control, dates out of order,
two experiments of one layer running at once, metrics over columns the session mart does not
have, targeting that names no segment of segments.yml or trigger of triggers.yml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from microseg.errors import ConfigError
from microseg.segments.grammar import NAME, Checker, mart_columns, read_definitions, value_class

METRIC_KINDS = {  # kind -> the kinds of session column it aggregates over the window
    "conversion": ("boolean",),  # any session in the window with the column true
    "sum": ("number",),  # the column summed over the window's sessions
    "mean": ("boolean", "number"),  # averaged over the window's sessions
    "opted_out": (),  # the person opted out within the window (a guardrail)
}
EXPERIMENT_KEYS = {
    "name", "hypothesis", "owner", "targeting", "layer", "start", "end", "salt", "arms",
    "primary", "secondary", "guardrails", "planned_people",
}  # fmt: skip
ARM_KEYS = {"name", "weight", "control", "send", "variant", "trigger"}
WEIGHT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    column: str | None
    window_days: int


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float
    control: bool
    send: bool  # trigger-targeted: does this arm get the message (control usually not)
    variant: str | None  # content variant passed with the message
    trigger: str | None = None  # another definition of the targeted trigger, acting instead


@dataclass(frozen=True)
class Guardrail:
    metric: str
    better: str  # higher | lower
    margin: float  # the worst absolute change tolerated (non-inferiority margin)


@dataclass(frozen=True)
class Experiment:
    name: str
    hypothesis: str
    owner: str
    target_kind: str  # trigger | segment
    target: str
    layer: str
    start: date
    end: date
    salt: str
    arms: tuple[Arm, ...]
    primary: str
    secondary: tuple[str, ...]
    guardrails: tuple[Guardrail, ...]
    planned_people: int  # exposed people the confidence sequence is tuned for

    @property
    def triggers(self) -> frozenset[str]:
        """The trigger definitions its arms act on: the targeted one and the arms' own."""
        if self.target_kind != "trigger":
            return frozenset()
        return frozenset({self.target, *(a.trigger for a in self.arms if a.trigger)})

    def trigger_of(self, arm: Arm) -> str:
        return arm.trigger or self.target


@dataclass(frozen=True)
class ExperimentFile:
    path: Path
    holdout: float
    metrics: dict[str, Metric]
    experiments: list[Experiment]


def _share(check: Checker, raw: Any, where: str, *, closed: bool = False) -> float:
    ok = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    if not ok or not (0 <= raw <= 1 if closed else 0 < raw <= 1):
        raise check.fail(
            where, f"must be a share {'from 0' if closed else 'above 0'} to 1, got {raw!r}"
        )
    return float(raw)


def _date(check: Checker, raw: Any, where: str) -> date:
    if isinstance(raw, datetime):
        raise check.fail(where, f"{raw!r} is a moment, not a date (YYYY-MM-DD)")
    if isinstance(raw, date):
        return raw
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise check.fail(where, f"{raw!r} is not a date (YYYY-MM-DD)") from None


def _metric(raw: Any, index: int) -> Metric:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"metrics[{index}]: name {name!r} must be lowercase letters, digits and _"
        )
    check = Checker(name, what="metric")
    check.known_fields(raw, {"name", "kind", "column", "window_days"}, "metric")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in METRIC_KINDS:
        raise check.fail("kind", f"{kind!r} is not one of {', '.join(METRIC_KINDS)}")
    column = raw.get("column")
    if kind == "opted_out":
        if column is not None:
            raise check.fail("column", "an opted_out metric takes no column")
    else:
        columns = mart_columns("fct_sessions")
        if not isinstance(column, str) or column not in columns:
            raise check.fail("column", f"unknown column {column!r} of marts.fct_sessions")
        if value_class(columns[column]) not in METRIC_KINDS[kind]:
            raise check.fail("column", f"{column!r} ({columns[column]}) cannot be a {kind} metric")
    window = check.whole(raw.get("window_days", 7), "window_days", 1, 90)
    return Metric(name, kind, column, window)


def _arms(check: Checker, raw: Any, triggers: set[str] | None) -> tuple[Arm, ...]:
    """The arms; `triggers` are the names an arm's `trigger` may take (None: the experiment
    targets a segment, where arms have no trigger)."""
    if not isinstance(raw, list) or len(raw) < 2:
        raise check.fail("arms", "needs a list of at least two arms")
    arms = []
    for i, item in enumerate(raw):
        where = f"arms[{i}]"
        if not isinstance(item, dict):
            raise check.fail(where, "expected a mapping with name and weight")
        check.known_fields(item, ARM_KEYS, where)
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise check.fail(f"{where}.name", f"{name!r} must be a lowercase name")
        control, send = item.get("control", False), item.get("send", not item.get("control", False))
        if not isinstance(control, bool) or not isinstance(send, bool):
            raise check.fail(where, "control and send are true or false")
        variant = item.get("variant")
        if variant is not None and not isinstance(variant, str):
            raise check.fail(f"{where}.variant", "is text (the content variant's name)")
        trigger = item.get("trigger")
        if trigger is not None and not isinstance(trigger, str):
            raise check.fail(f"{where}.trigger", "is the name of a trigger of triggers.yml")
        if trigger is not None and triggers is None:
            raise check.fail(f"{where}.trigger", "is for experiments that target a trigger")
        if trigger is not None and trigger not in triggers:
            known = ", ".join(sorted(triggers)) or "none"
            raise check.fail(f"{where}.trigger", f"no trigger {trigger!r} (known: {known})")
        weight = _share(check, item.get("weight"), f"{where}.weight")
        arms.append(Arm(name, weight, control, send, variant, trigger))
    if len({a.name for a in arms}) != len(arms):
        raise check.fail("arms", "arm names must differ")
    total = sum(a.weight for a in arms)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise check.fail("arms", f"weights sum to {total:g}, not 1")
    if sum(a.control for a in arms) != 1:
        raise check.fail("arms", "needs exactly one control arm (control: true)")
    return tuple(arms)


def _experiment(
    raw: Any, index: int, metrics: dict[str, Metric], targets: dict[str, set[str]]
) -> Experiment:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"experiments[{index}]: name {name!r} must be lowercase letters, digits and _"
        )
    check = Checker(name, what="experiment")
    check.known_fields(raw, EXPERIMENT_KEYS, "experiment")
    texts = {}
    for field in ("hypothesis", "owner"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise check.fail(field, "is required (text)")
        texts[field] = raw[field]
    targeting = raw.get("targeting")
    if (
        not isinstance(targeting, dict)
        or len(targeting) != 1
        or next(iter(targeting)) not in targets
    ):
        raise check.fail("targeting", "needs one of {trigger: NAME} or {segment: NAME}")
    kind, target = next(iter(targeting.items()))
    if not isinstance(target, str) or target not in targets[kind]:
        known = ", ".join(sorted(targets[kind])) or "none"
        raise check.fail(f"targeting.{kind}", f"no {kind} {target!r} (known: {known})")
    layer = raw.get("layer", name)
    if not isinstance(layer, str) or not NAME.fullmatch(layer):
        raise check.fail("layer", f"{layer!r} must be a lowercase name")
    start, end = _date(check, raw.get("start"), "start"), _date(check, raw.get("end"), "end")
    if end <= start:
        raise check.fail("end", f"{end} is not after start {start}")
    salt = raw.get("salt", name)
    if not isinstance(salt, str) or not salt:
        raise check.fail("salt", "is text")
    arms = _arms(check, raw.get("arms"), targets["trigger"] if kind == "trigger" else None)
    arms = tuple(replace(a, trigger=None) if a.trigger == target else a for a in arms)

    def metric(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in metrics:
            raise check.fail(
                where, f"unknown metric {value!r} (metrics: {', '.join(metrics) or 'none'})"
            )
        return value

    primary = metric(raw.get("primary"), "primary")
    secondary = raw.get("secondary", [])
    if not isinstance(secondary, list):
        raise check.fail("secondary", "expected a list of metric names")
    guardrails = []
    if not isinstance(raw.get("guardrails", []), list):
        raise check.fail("guardrails", "expected a list of {metric, better, margin}")
    for i, item in enumerate(raw.get("guardrails", [])):
        where = f"guardrails[{i}]"
        if not isinstance(item, dict):
            raise check.fail(where, "expected {metric, better, margin}")
        check.known_fields(item, {"metric", "better", "margin"}, where)
        better = item.get("better")
        if better not in ("higher", "lower"):
            raise check.fail(f"{where}.better", f"{better!r} is not higher or lower")
        margin = item.get("margin")
        if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
            raise check.fail(f"{where}.margin", "is the worst change tolerated: a number >= 0")
        guardrails.append(
            Guardrail(metric(item.get("metric"), f"{where}.metric"), better, float(margin))
        )
    return Experiment(
        name=name, hypothesis=texts["hypothesis"], owner=texts["owner"], target_kind=kind,
        target=target, layer=layer, start=start, end=end, salt=salt, arms=arms, primary=primary,
        secondary=tuple(metric(m, f"secondary[{i}]") for i, m in enumerate(secondary)),
        guardrails=tuple(guardrails),
        planned_people=check.whole(raw.get("planned_people", 10_000), "planned_people", 100, 10**9),
    )  # fmt: skip


def _no_overlap_in_layers(experiments: list[Experiment]) -> None:
    """Experiments of one layer are mutually exclusive: their dates may not overlap."""
    by_layer: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        by_layer.setdefault(experiment.layer, []).append(experiment)
    for layer, members in by_layer.items():
        members.sort(key=lambda e: e.start)
        for earlier, later in pairwise(members):
            if later.start < earlier.end:
                raise ConfigError(
                    f"experiment '{later.name}': layer: {layer!r} already runs "
                    f"'{earlier.name}' until {earlier.end} "
                    "(experiments of one layer may not overlap)"
                )


def _arm_triggers_belong_to_one_experiment(experiments: list[Experiment]) -> None:
    """A threshold test routes each of its definitions to its own arm, so no other experiment
    may use any of them (an arm's trigger acts only for that arm)."""
    for experiment in experiments:
        if len(experiment.triggers) < 2:
            continue
        for other in experiments:
            shared = sorted(experiment.triggers & other.triggers) if other is not experiment else []
            if shared:
                raise ConfigError(
                    f"experiment '{other.name}': trigger {shared[0]!r} is one of the "
                    f"definitions experiment '{experiment.name}' tests (each acts only for its "
                    "arm there)"
                )


def load_experiments(path: Path, *, segments: set[str], triggers: set[str]) -> ExperimentFile:
    """Read and validate an experiments file against the segment and trigger names that exist."""
    document = read_definitions(path, "experiment")
    if not isinstance(document, dict) or not isinstance(document.get("experiments"), list):
        raise ConfigError(f"{path}: expected a top-level `experiments:` list")
    try:
        unknown = sorted(set(document) - {"experiments", "metrics", "holdout"}, key=str)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown top-level field")
        holdout = _share(
            Checker("holdout", what="file"), document.get("holdout", 0), "holdout", closed=True
        )
        if holdout >= 0.5:
            raise ConfigError(f"holdout: {holdout} would keep most people out of personalization")
        raw_metrics = document.get("metrics") or []
        if not isinstance(raw_metrics, list):
            raise ConfigError("metrics: expected a list")
        metrics = {m.name: m for m in (_metric(raw, i) for i, raw in enumerate(raw_metrics))}
        if len(metrics) != len(raw_metrics):
            raise ConfigError("metrics: a metric name is defined twice")
        targets = {"segment": segments, "trigger": triggers}
        experiments = [
            _experiment(raw, i, metrics, targets) for i, raw in enumerate(document["experiments"])
        ]
        if len({e.name for e in experiments}) != len(experiments):
            raise ConfigError("experiments: an experiment name is defined twice")
        _no_overlap_in_layers(experiments)
        _arm_triggers_belong_to_one_experiment(experiments)
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
    return ExperimentFile(path, holdout, metrics, experiments)


def load_configured_experiments(settings) -> ExperimentFile:
    """The settings' experiments file, checked against its segments and triggers files."""
    from microseg.activation import load_triggers
    from microseg.segments import load_segments

    return load_experiments(
        settings.experiments_file,
        segments={s.name for s in load_segments(settings.segments_file)},
        triggers={t.name for t in load_triggers(settings.triggers_file).triggers},
    )
