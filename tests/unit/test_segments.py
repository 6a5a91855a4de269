"""segments.yml validation: every mistake is one line naming the segment and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from microseg.config import PROJECT_ROOT
from microseg.errors import ConfigError
from microseg.segments import load_segments
from tests.helpers import run_cli


def _write(tmp_path: Path, rule: dict, **extra) -> Path:
    segment = {"name": "probe", "description": "d", "owner": "o", "kind": "rule", "rule": rule}
    path = tmp_path / "segments.yml"
    path.write_text(yaml.safe_dump({"segments": [{**segment, **extra}]}, sort_keys=False))
    return path


def test_the_shipped_definitions_are_valid() -> None:
    segments = load_segments(PROJECT_ROOT / "segments.yml")
    assert [s.name for s in segments] == [
        "subscribe_curious_readers",
        "product_hesitators",
        "frequent_visitors",
        "recent_engagers",
        "deep_content_readers",
        "low_engagement",
        "cart_abandoners",
    ]
    curious = segments[0].plan["blocks"][0]
    assert curious["quantifier"] == "any" and curious["within_days"] == 7
    window = curious["leaves"][0]
    assert (window["event_type"], window["within_minutes"], window["op"], window["value"]) == (
        "page_view",
        10,
        ">=",
        3,
    )
    assert window["filters"] == [{"column": "page_type", "op": "=", "value": "article"}]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"feature": "days_since_last_sesion", "<=": 1},
            "segment 'probe': rule.feature: unknown feature 'days_since_last_sesion'",
        ),
        (
            {"feature": "sessions_7d; drop table marts.dim_persons", ">": 1},
            "segment 'probe': rule.feature: unknown feature 'sessions_7d; drop table",
        ),
        (
            {"feature": "sessions_7d", "=>": 3},
            "segment 'probe': rule: unknown operator '=>'; use >, >=, <, <=, =, !=",
        ),
        (
            {"any_session": {"count": "pageview", ">=": 3}},
            "segment 'probe': rule.any_session.count: unknown event type 'pageview'",
        ),
        (
            {"any_session": {"count": "page_view", "within_minutes": -5, ">=": 3}},
            "segment 'probe': rule.any_session.within_minutes: must be a whole number from 1",
        ),
        (
            {"any_session": {"within_days": "a week", "count": "page_view", ">=": 3}},
            "segment 'probe': rule.any_session.within_days: must be a whole number",
        ),
        (
            {"feature": "sessions_7d", ">=": "3 or 1=1"},
            "segment 'probe': rule.>=: '3 or 1=1' is not a number (bigint)",
        ),
        (
            {"any_session": {"count": "hover", "where": {"element_idd": "x"}, ">=": 1}},
            "segment 'probe': rule.any_session.where.element_idd: unknown column 'element_idd'",
        ),
        (
            {"any_session": {"dwell": {"page_type": {">": "a"}}, ">": 1}},
            "segment 'probe': rule.any_session.dwell.page_type: '>' does not apply to string",
        ),
        (
            {"feature": "sessions_7d"},
            "segment 'probe': rule: needs exactly one comparison of >, >=, <, <=, =, !=",
        ),
        (
            {"all": [{"feature": "sessions_7d", ">": 1, "within": 3}]},
            "segment 'probe': rule.all[0]: unknown field 'within'",
        ),
        (
            {"any_session": {"any_session": {"count": "hover", ">": 1}}},
            "segment 'probe': rule.any_session: 'any_session' cannot be nested",
        ),
        (
            {"any_session": {"count": "add_to_cart", "not_followed_by": "checkout_start", ">": 0}},
            "segment 'probe': rule.any_session.not_followed_by: needs within_minutes",
        ),
    ],
)
def test_invalid_definitions_name_the_segment_and_field(
    tmp_path: Path, rule: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_segments(_write(tmp_path, rule))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_segment_level_fields_are_checked(tmp_path: Path) -> None:
    rule = {"feature": "sessions_7d", ">": 1}
    for extra, message in [
        ({"kind": "magic"}, "segment 'probe': kind: 'magic' is not one of rule, cluster, score"),
        ({"owner": ""}, "segment 'probe': owner: is required"),
        ({"priority": 1.5}, "segment 'probe': priority: must be a whole number"),
        ({"kind": "score"}, "segment 'probe': rule: a score segment needs a score condition"),
        ({"colour": "red"}, "segment 'probe': colour: unknown field"),
        (
            {"decay": {"half_life_days": 3}},
            "segment 'probe': decay: needs a session block (any_session / every_session)",
        ),
    ]:
        with pytest.raises(ConfigError, match="^" + re.escape(message)):
            load_segments(_write(tmp_path, rule, **extra))
    with pytest.raises(ConfigError, match=r"segments\[0\]: name 'Bad Name' must be lowercase"):
        load_segments(_write(tmp_path, rule, name="Bad Name"))


def test_a_decay_is_checked_and_kept_in_the_plan(tmp_path: Path) -> None:
    block = {"any_session": {"count": "hover", ">=": 2}}
    for decay, message in [
        ({"half_life_days": 0}, "decay.half_life_days: must be a positive number, got 0"),
        ({"half_life_days": 2, "min_relevance": 1}, "decay.min_relevance: must be from 0"),
        ({"half_life": 2}, "decay: unknown field 'half_life' (did you mean 'half_life_days'?)"),
    ]:
        with pytest.raises(ConfigError, match="^" + re.escape(f"segment 'probe': {message}")):
            load_segments(_write(tmp_path, block, decay=decay))
    [segment] = load_segments(_write(tmp_path, block, decay={"half_life_days": 2}))
    assert segment.plan["decay"] == {"half_life_days": 2, "min_relevance": 0}


def test_typo_in_a_field_is_named_with_a_suggestion(tmp_path: Path) -> None:
    """`within_minute` was once reported as the missing `within_minutes` it left behind."""
    rule = {
        "any_session": {
            "count": "add_to_cart",
            "within_minute": 15,
            "not_followed_by": "checkout_start",
            ">=": 1,
        }
    }
    with pytest.raises(ConfigError) as error:
        load_segments(_write(tmp_path, rule))
    assert str(error.value) == (
        "segment 'probe': rule.any_session: unknown field 'within_minute' "
        "(did you mean 'within_minutes'?)"
    )


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    bad = _write(tmp_path, {"feature": "nope", ">": 1})
    result = run_cli("segments", home=tmp_path / "home", env={"MICROSEG_SEGMENTS_FILE": str(bad)})
    assert result.returncode == 2
    assert result.stderr == "error: segment 'probe': rule.feature: unknown feature 'nope'\n"
    broken = tmp_path / "broken.yml"
    broken.write_text("segments:\n  - name: x\n    rule: {feature: [\n")
    result = run_cli(
        "segments", home=tmp_path / "home", env={"MICROSEG_SEGMENTS_FILE": str(broken)}
    )
    assert result.returncode == 2
    # the problem is at the end of the file: reported on its last line (3), not past it
    assert result.stderr == (
        f"error: {broken} line 3: not valid YAML: expected the node content, "
        "but found the end of the file\n"
    )
