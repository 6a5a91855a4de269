"""The segment grammar (segments.yml, docs/segments.md): parse and validate into a plan.

Analysts write conditions by column name; this module checks every name against the marts'
contracts (dbt_project/models/marts/_marts.yml) and the event contract, every operator against
a fixed list and every value against its column's type, and normalizes each definition into a
plan that the macro-driven dbt models render (see run.py). Identifiers in the plan are only
names found in those contracts, and values are typed JSON that the macros render as quoted
literals, so a definition cannot inject SQL.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from microseg.config import PROJECT_ROOT, load_yaml
from microseg.contract import event_contract
from microseg.errors import ConfigError

OPERATORS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "=": "=", "!=": "<>"}
KINDS = ("rule", "cluster", "score")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
SEGMENT_KEYS = {
    "name",
    "title",
    "description",
    "owner",
    "kind",
    "priority",
    "exclusive_group",
    "rule",
    "decay",
}
PERSON_SUBJECTS = ("feature", "score", "cluster", "sessions_within_hours", "since_last_event")
SESSION_SUBJECTS = ("count", "dwell", "session")
BLOCKS = {"any_session": "any", "every_session": "every"}
TIME_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
# Event columns a `count` may filter on: descriptive strings, plus the typed properties.
EVENT_FILTER_COLUMNS = {
    "scroll_percent": "double",
    "hover_ms": "bigint",
    "price": "double",
    "quantity": "double",
    "revenue": "double",
}
EVENT_ID_COLUMNS = {"event_id", "event_type", "anonymous_id", "user_id"}
MAX_WITHIN_DAYS = 90
# Fields a condition takes besides its subject, `as` and one comparison.
SUBJECT_FIELDS = {
    "sessions_within_hours": ("within_days",),
    "count": ("where", "within_minutes", "not_followed_by"),
    "dwell": ("without",),
}


@dataclass(frozen=True)
class Segment:
    """One validated definition and the plan dbt renders into SQL."""

    name: str
    title: str
    kind: str
    definition_hash: str
    plan: dict[str, Any]
    score_models: tuple[str, ...]
    uses_clusters: bool


@cache
def _marts_schema() -> dict:
    return load_yaml((PROJECT_ROOT / "dbt_project/models/marts/_marts.yml").read_text())


def mart_columns(model: str) -> dict[str, str]:
    """Column name -> declared data_type of a mart, from its enforced dbt contract."""
    for entry in _marts_schema()["models"]:
        if entry["name"] == model:
            return {c["name"]: c["data_type"].lower() for c in entry["columns"]}
    raise KeyError(model)


@cache
def event_filter_columns() -> dict[str, str]:
    strings = {
        f.name: "string"
        for f in event_contract().fields
        if f.sql_type == "VARCHAR" and f.name not in EVENT_ID_COLUMNS
    }
    return {**strings, **EVENT_FILTER_COLUMNS}


def value_class(data_type: str) -> str:
    if data_type.startswith(("bigint", "integer", "double", "decimal", "float", "smallint")):
        return "number"
    if data_type == "boolean":
        return "boolean"
    if data_type == "string":
        return "text"
    return "other"


class Checker:
    """Validates one definition (a segment, or a trigger: the same building blocks); errors
    name the definition and the field path. With `baselines`, a session condition may compare
    with a statistic of recent behavior instead of a number (triggers)."""

    def __init__(self, name: str, what: str = "segment", baselines: bool = False) -> None:
        self.name = name
        self.what = what
        self.baselines = baselines
        self.leaves = 0
        self.blocks: list[dict[str, Any]] = []
        self.person_leaves: list[dict[str, Any]] = []
        self.evidence: dict[str, str] = {}
        self.score_models: set[str] = set()
        self.uses_clusters = False

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.what} '{self.name}': {where}: {problem}")

    def mapping(self, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(where, "expected a mapping of keys to values")
        return raw

    def whole(self, raw: Any, where: str, low: int, high: int) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise self.fail(where, f"must be a whole number from {low} to {high}, got {raw!r}")
        return raw

    def typed_value(self, raw: Any, data_type: str, where: str) -> Any:
        """The value if it fits a column of data_type; numbers must be finite."""
        kind = value_class(data_type)
        ok = {
            "number": isinstance(raw, int | float)
            and not isinstance(raw, bool)
            and math.isfinite(raw),
            "boolean": isinstance(raw, bool),
            "text": isinstance(raw, str) and len(raw) <= 1000,
        }.get(kind, False)
        if not ok:
            wanted = {"number": "a number", "boolean": "true or false", "text": "a string"}
            raise self.fail(where, f"{raw!r} is not {wanted.get(kind, 'comparable')} ({data_type})")
        return raw

    def comparison(self, raw: dict[str, Any], data_type: str, where: str) -> tuple[str, Any]:
        ops = [key for key in raw if key in OPERATORS]
        if len(ops) != 1:
            raise self.fail(where, f"needs exactly one comparison of {', '.join(OPERATORS)}")
        op = ops[0]
        if isinstance(raw[op], dict) and self.baselines and value_class(data_type) == "number":
            return OPERATORS[op], self.baseline(raw[op], f"{where}.{op}")
        value = self.typed_value(raw[op], data_type, f"{where}.{op}")
        if value_class(data_type) in ("text", "boolean") and op not in ("=", "!="):
            raise self.fail(where, f"'{op}' does not apply to {data_type}; use = or !=")
        return OPERATORS[op], value

    def baseline(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        """`{percentile: 95, baseline_days: 28}`: the threshold is that percentile of the
        condition's own values over the sessions of the days before the run date."""
        self.known_fields(raw, {"percentile", "baseline_days", "of"}, where)
        p = raw.get("percentile")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p < 100:
            raise self.fail(f"{where}.percentile", f"must be a number between 0 and 100, got {p!r}")
        days = self.whole(
            raw.get("baseline_days", 28), f"{where}.baseline_days", 1, MAX_WITHIN_DAYS
        )
        return {"percentile": p, "baseline_days": days, "of": raw.get("of")}

    def column(self, raw: Any, columns: dict[str, str], what: str, where: str) -> str:
        if not isinstance(raw, str) or raw not in columns:
            raise self.fail(where, f"unknown {what} {raw!r}")
        return raw

    def event_type(self, raw: Any, where: str) -> str:
        if raw not in event_contract().event_types:
            raise self.fail(where, f"unknown event type {raw!r}")
        return raw

    def filters(self, raw: Any, columns: dict[str, str], where: str) -> list[dict[str, Any]]:
        """`where: {column: value}` (equality) or `{column: {op: value}}`."""
        out = []
        for column, condition in self.mapping(raw, where).items():
            name = self.column(column, columns, "column", f"{where}.{column}")
            if isinstance(condition, dict):
                op, value = self.comparison(condition, columns[name], f"{where}.{column}")
                if len(condition) != 1:
                    raise self.fail(f"{where}.{column}", "expected one comparison")
            else:
                op = "="
                value = self.typed_value(condition, columns[name], f"{where}.{column}")
            out.append({"column": name, "op": op, "value": value})
        return out

    def leaf(self, raw: dict[str, Any], where: str, scope: str) -> dict[str, Any]:
        subjects = PERSON_SUBJECTS if scope == "person" else SESSION_SUBJECTS
        found = [key for key in raw if key in subjects]
        if len(found) != 1:
            raise self.fail(where, f"needs exactly one of {', '.join(subjects)}")
        subject = found[0]
        leaf_id = f"l{self.leaves}"
        self.leaves += 1
        leaf: dict[str, Any] = {"id": leaf_id, "subject": subject}
        self.known_fields(raw, {subject, "as", *OPERATORS, *SUBJECT_FIELDS.get(subject, ())}, where)
        here = f"{where}.{subject}"
        if subject == "feature":
            columns = mart_columns("fct_user_features_daily")
            leaf["column"] = self.column(raw[subject], columns, "feature", here)
            data_type, key = columns[leaf["column"]], leaf["column"]
        elif subject == "score":
            model = raw[subject]
            if not isinstance(model, str) or not NAME.fullmatch(model):
                raise self.fail(here, f"{model!r} is not a model name")
            leaf["model"] = model
            self.score_models.add(model)
            data_type, key = "double", model
        elif subject == "cluster":  # membership of a named behavioral cluster
            label = raw[subject]
            if not isinstance(label, str) or not label.strip() or len(label) > 100:
                raise self.fail(here, f"{label!r} is not a cluster name")
            if any(op in raw for op in OPERATORS):
                raise self.fail(where, "a cluster condition takes no comparison")
            self.uses_clusters = True
            data_type, key = "string", "cluster"
            raw = {**raw, "=": label}  # membership: the person's cluster is this one
        elif subject == "sessions_within_hours":
            leaf["hours"] = self.whole(raw[subject], here, 1, 24 * MAX_WITHIN_DAYS)
            leaf["within_days"] = self.whole(
                raw.get("within_days", 7), f"{where}.within_days", 1, MAX_WITHIN_DAYS
            )
            data_type, key = "bigint", f"sessions_{leaf['hours']}h"
        elif subject == "since_last_event":
            unit = raw[subject]
            if unit not in TIME_UNITS:
                raise self.fail(here, f"unit {unit!r} is not one of {', '.join(TIME_UNITS)}")
            leaf["seconds_per_unit"] = TIME_UNITS[unit]
            data_type, key = "double", f"{unit}_since_last_event"
        elif subject == "count":
            leaf["event_type"] = self.event_type(raw[subject], here)
            leaf["filters"] = (
                self.filters(raw["where"], event_filter_columns(), f"{where}.where")
                if "where" in raw
                else []
            )
            if "within_minutes" in raw:
                leaf["within_minutes"] = self.whole(
                    raw["within_minutes"], f"{where}.within_minutes", 1, 24 * 60
                )
            if "not_followed_by" in raw:
                follow = self.event_type(raw["not_followed_by"], f"{where}.not_followed_by")
                if follow == leaf["event_type"] or "within_minutes" not in raw:
                    raise self.fail(
                        f"{where}.not_followed_by",
                        "needs within_minutes and an event type other than the counted one",
                    )
                leaf["not_followed_by"] = follow
            data_type = "bigint"
            key = f"{leaf['event_type']}s" + (
                f"_{leaf['within_minutes']}m" if "within_minutes" in leaf else ""
            )
        elif subject == "dwell":
            columns = mart_columns("fct_page_views")
            leaf["filters"] = self.filters(raw[subject], columns, here)
            if "without" in raw:
                leaf["without"] = self.event_type(raw["without"], f"{where}.without")
            data_type, key = "bigint", "dwell_s"
        else:  # session
            columns = mart_columns("fct_sessions")
            leaf["column"] = self.column(raw[subject], columns, "session column", here)
            data_type, key = columns[leaf["column"]], leaf["column"]
        if scope == "person":
            self.baselines, baselines = False, self.baselines  # only session values have one
        try:
            leaf["op"], leaf["value"] = self.comparison(raw, data_type, where)
        finally:
            if scope == "person":
                self.baselines = baselines
        key = raw.get("as", key)
        if not isinstance(key, str) or not NAME.fullmatch(key):
            raise self.fail(f"{where}.as", f"{key!r} is not a lowercase name")
        if isinstance(leaf["value"], dict):
            of = leaf["value"].pop("of")
            if of not in (None, key):
                raise self.fail(
                    f"{where}.of", f"a baseline is of the condition's own value {key!r}, not {of!r}"
                )
        if key in self.evidence:
            raise self.fail(where, f"evidence name {key!r} is used twice; set `as`")
        self.evidence[key] = leaf_id
        leaf["key"] = key
        return leaf

    def known_fields(self, raw: dict[str, Any], allowed: set[str], where: str) -> None:
        """Refuse a key the condition does not take, before anything else is checked, so a
        typo (`within_minute`) is named as such rather than as what it left missing."""
        unknown = sorted(set(raw) - allowed, key=str)
        if not unknown:
            return
        key = str(unknown[0])
        if re.fullmatch(r"[<>=!~]+", key):
            raise self.fail(where, f"unknown operator {key!r}; use {', '.join(OPERATORS)}")
        close = difflib.get_close_matches(key, sorted(allowed - set(OPERATORS)), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise self.fail(where, f"unknown field {key!r}{hint}")

    def tree(self, raw: Any, where: str, scope: str) -> dict[str, Any]:
        node = self.mapping(raw, where)
        logic = [key for key in ("all", "any", "not") if key in node]
        blocks = [key for key in BLOCKS if key in node]
        if logic:
            op = logic[0]
            if len(node) != 1:
                raise self.fail(where, f"'{op}' must stand alone in its mapping")
            if op == "not":
                return {"not": self.tree(node["not"], f"{where}.not", scope)}
            items = node[op]
            if not isinstance(items, list) or not items:
                raise self.fail(f"{where}.{op}", "expected a non-empty list of conditions")
            return {op: [self.tree(c, f"{where}.{op}[{i}]", scope) for i, c in enumerate(items)]}
        if blocks:
            if scope != "person":
                raise self.fail(where, f"'{blocks[0]}' cannot be nested in a session block")
            return self.block(node, blocks[0], f"{where}.{blocks[0]}")
        leaf = self.leaf(node, where, scope)
        (self.person_leaves if scope == "person" else self.blocks[-1]["leaves"]).append(leaf)
        return {"ref": leaf["id"]}

    def block(self, node: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        if len(node) != 1:
            raise self.fail(where, f"'{key}' must stand alone in its mapping")
        body = dict(self.mapping(node[key], where))
        within = self.whole(body.pop("within_days", 7), f"{where}.within_days", 1, MAX_WITHIN_DAYS)
        block = {
            "id": f"b{len(self.blocks)}",
            "quantifier": BLOCKS[key],
            "within_days": within,
            "leaves": [],
        }
        self.blocks.append(block)
        block["expression"] = self.tree(body, where, "session")
        return {"ref": block["id"]}


def _decay(check: Checker, raw: Any) -> dict[str, Any] | None:
    """`decay: {half_life_days: 7, min_relevance: 0.25}`: a member's relevance halves every
    half-life after the last session that qualified them; below min_relevance they leave."""
    if raw is None:
        return None
    raw = check.mapping(raw, "decay")
    check.known_fields(raw, {"half_life_days", "min_relevance"}, "decay")
    if not check.blocks:
        raise check.fail("decay", "needs a session block (any_session / every_session) to age")
    half_life = raw.get("half_life_days")
    if isinstance(half_life, bool) or not isinstance(half_life, int | float) or half_life <= 0:
        raise check.fail("decay.half_life_days", f"must be a positive number, got {half_life!r}")
    floor = raw.get("min_relevance", 0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor < 1:
        raise check.fail("decay.min_relevance", f"must be from 0 to below 1, got {floor!r}")
    return {"half_life_days": half_life, "min_relevance": floor}


def _segment(raw: Any, index: int, seen: set[str]) -> Segment:
    if not isinstance(raw, dict):
        raise ConfigError(f"segments[{index}]: expected a mapping with name, kind and rule")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"segments[{index}]: name {name!r} must be lowercase letters, digits and _"
        )
    check = Checker(name)
    if name in seen:
        raise check.fail("name", "defined twice")
    seen.add(name)
    unknown = sorted(set(raw) - SEGMENT_KEYS)
    if unknown:
        raise check.fail(unknown[0], "unknown field")
    for field in ("description", "owner"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise check.fail(field, "is required (text)")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise check.fail("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    priority = check.whole(raw.get("priority", 0), "priority", -1000, 1000)
    group = raw.get("exclusive_group")
    if group is not None and not (isinstance(group, str) and NAME.fullmatch(group)):
        raise check.fail("exclusive_group", f"{group!r} must be a lowercase name")
    if "rule" not in raw:
        raise check.fail("rule", "is required")
    expression = check.tree(raw["rule"], "rule", "person")
    if kind == "score" and not check.score_models:
        raise check.fail("rule", "a score segment needs a score condition")
    if kind == "cluster" and not check.uses_clusters:
        raise check.fail("rule", "a cluster segment needs a cluster condition")
    decay = _decay(check, raw.get("decay"))
    definition_hash = hashlib.sha256(
        json.dumps(raw, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    title = raw.get("title", name)
    plan = {
        "name": name,
        "title": str(title),
        "description": raw["description"],
        "owner": raw["owner"],
        "kind": kind,
        "priority": priority,
        "exclusive_group": group,
        "decay": decay,
        "definition_hash": definition_hash,
        "person_leaves": check.person_leaves,
        "blocks": check.blocks,
        "expression": expression,
        "evidence": sorted(check.evidence.items()),
    }
    return Segment(
        name,
        str(title),
        kind,
        definition_hash,
        plan,
        tuple(sorted(check.score_models)),
        check.uses_clusters,
    )


def _yaml_problem(exc: yaml.YAMLError, path: Path) -> str:
    """Where and what, within the file: a problem found at its end (an unclosed bracket) is
    shown on its last line, not on the line after it."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ": not valid YAML"
    last_line = max(1, len(path.read_text("utf-8").splitlines()))
    line = min(mark.line + 1, last_line)
    problem = (getattr(exc, "problem", None) or "syntax error").replace(
        "'<stream end>'", "the end of the file"
    )
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    started = ""
    if context and start and start.line < mark.line:
        started = f" ({context} started on line {start.line + 1})"
    return f" line {line}: not valid YAML: {problem}{started}"


def read_definitions(path: Path, what: str) -> Any:
    """A definitions file's YAML; a file that cannot be read or parsed is one line naming
    it (and the line of a syntax error)."""
    try:
        return load_yaml(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} definitions {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}{_yaml_problem(exc, path)}") from None


def load_segments(path: Path) -> list[Segment]:
    """Read and validate a segments file; raise ConfigError naming the segment and the field."""
    document = read_definitions(path, "segment")
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
        raise ConfigError(f"{path}: expected a top-level `segments:` list")
    seen: set[str] = set()
    return [_segment(raw, i, seen) for i, raw in enumerate(document["segments"])]
