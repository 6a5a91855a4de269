"""triggers.yml is checked before anything runs: one line naming file, trigger and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from microseg.activation import load_triggers
from microseg.config import PROJECT_ROOT
from microseg.errors import ConfigError

BASE = yaml.safe_load((PROJECT_ROOT / "triggers.yml").read_text())


def _load(tmp_path: Path, change) -> None:
    document = yaml.safe_load(yaml.safe_dump(BASE))
    change(document)
    path = tmp_path / "triggers.yml"
    path.write_text(yaml.safe_dump(document))
    load_triggers(path)


def _first_when(document, when) -> None:
    document["triggers"][0]["when"] = when


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: _first_when(d, {"count": "pageview", ">=": 1}),
            "triggers.yml: trigger 'cart_abandoned': when.count: unknown event type 'pageview'",
        ),
        (
            lambda d: _first_when(d, {"dwell": {"page_kind": "product"}, ">": 3}),
            "triggers.yml: trigger 'cart_abandoned': when.dwell.page_kind: "
            "unknown column 'page_kind'",
        ),
        (
            lambda d: d["triggers"][0].update({"who": {"feature": "sessions_9d", ">": 1}}),
            "triggers.yml: trigger 'cart_abandoned': who.feature: unknown feature 'sessions_9d'",
        ),
        (
            lambda d: d["caps"].append({"name": "weekly", "max": 3}),
            "triggers.yml: cap 'weekly': per: needs a window: "
            "one of session, day, rolling (got None)",
        ),
        (
            lambda d: d["caps"].append({"name": "weekly", "max": 3, "per": "rolling"}),
            "triggers.yml: cap 'weekly': days: a rolling cap needs its window in days",
        ),
        (
            lambda d: _first_when(d, {"dwell": {"page_type": "product"}, ">": {"percentile": 100}}),
            "triggers.yml: trigger 'cart_abandoned': when.>.percentile: must be a number "
            "between 0 and 100, got 100",
        ),
        (
            lambda d: d["destinations"].append(
                {"name": "hook", "type": "webhook", "url": "ftp://x.example/h", "secret_env": "S"}
            ),
            "triggers.yml: destination 'hook': url: 'ftp://x.example/h' is not http(s)",
        ),
        (
            lambda d: d["destinations"].append(
                {"name": "hook", "type": "webhook", "url": "http://h:99999/x", "secret_env": "S"}
            ),
            "triggers.yml: destination 'hook': url: 'http://h:99999/x' has a bad port: ",
        ),
        (
            lambda d: d["triggers"][0].update({"destinations": ["nowhere"]}),
            "triggers.yml: trigger 'cart_abandoned': destinations: unknown destination 'nowhere'",
        ),
        (
            lambda d: d["triggers"][0].update({"chanel": "email"}),
            "triggers.yml: trigger 'cart_abandoned': trigger: unknown field 'chanel' "
            "(did you mean 'channel'?)",
        ),
        (
            lambda d: d["triggers"][0].update({"who": {"any_session": {"count": "hover", ">": 1}}}),
            "triggers.yml: trigger 'cart_abandoned': who: takes conditions on the person only "
            "(no session blocks)",
        ),
    ],
)
def test_bad_definitions_name_file_trigger_and_field(tmp_path, change, message) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, change)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_shipped_file_is_valid_and_a_baseline_is_kept_in_the_plan() -> None:
    triggers = load_triggers(PROJECT_ROOT / "triggers.yml")
    by_name = {t.name: t for t in triggers.triggers}
    leaf = by_name["unusual_product_dwell"].plan["leaves"][0]
    assert leaf["value"] == {"percentile": 95, "baseline_days": 28}
    assert {c.name for c in triggers.caps} == {
        "two_per_session", "one_email_per_day", "three_commerce_per_week"
    }  # fmt: skip
