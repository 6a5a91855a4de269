"""experiments.yml is checked before anything runs: one line naming file, experiment, field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from microseg.activation import load_triggers
from microseg.config import PROJECT_ROOT
from microseg.errors import ConfigError
from microseg.experiments.grammar import load_experiments
from microseg.segments import load_segments
from tests.helpers import run_cli

BASE = yaml.safe_load((PROJECT_ROOT / "experiments.yml").read_text())
NAMES = {
    "segments": {s.name for s in load_segments(PROJECT_ROOT / "segments.yml")},
    "triggers": {t.name for t in load_triggers(PROJECT_ROOT / "triggers.yml").triggers},
}


def _load(tmp_path: Path, change) -> None:
    document = yaml.safe_load(yaml.safe_dump(BASE))
    change(document)
    path = tmp_path / "experiments.yml"
    path.write_text(yaml.safe_dump(document))
    load_experiments(path, **NAMES)


def _first(document: dict) -> dict:
    return document["experiments"][0]


def _second_in_layer(document: dict) -> None:
    second = dict(_first(document), name="cart_reminder_2", start="2026-10-18", end="2026-10-30")
    document["experiments"].append(second)


PREFIX = "experiments.yml: experiment 'cart_reminder': "


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: _first(d)["arms"][1].update(weight=0.6),
            PREFIX + "arms: weights sum to 1.1, not 1",
        ),
        (
            lambda d: _first(d)["arms"][0].update(control=False),
            PREFIX + "arms: needs exactly one control arm (control: true)",
        ),
        (
            lambda d: _first(d).update(end="2026-10-01"),
            PREFIX + "end: 2026-10-01 is not after start 2026-10-05",
        ),
        (
            lambda d: _first(d).update(targeting={"trigger": "cart_abandon"}),
            PREFIX + "targeting.trigger: no trigger 'cart_abandon' (known: binge_reader, "
            "cart_abandoned, product_lingerer, product_lingerer_3min, subscribe_interest, "
            "unusual_product_dwell)",
        ),
        (
            lambda d: _first(d)["arms"][1].update(trigger="cart_abandoned_1min"),
            PREFIX + "arms[1].trigger: no trigger 'cart_abandoned_1min' (known: binge_reader,",
        ),
        (
            lambda d: d["experiments"][2]["arms"][1].update(trigger="binge_reader"),
            "experiments.yml: experiment 'newsletter_teaser': arms[1].trigger: is for "
            "experiments that target a trigger",
        ),
        (
            lambda d: _first(d)["arms"][1].update(trigger="product_lingerer_3min"),
            "experiments.yml: experiment 'lingerer_threshold': trigger 'product_lingerer_3min' "
            "is one of the definitions experiment 'cart_reminder' tests",
        ),
        (
            lambda d: _first(d).update(targeting={"trigger": "product_lingerer"}),
            PREFIX + "trigger 'product_lingerer' is one of the definitions experiment "
            "'lingerer_threshold' tests (each acts only for its arm there)",
        ),
        (
            lambda d: _first(d)["arms"][1].update(trigger=["product_lingerer_3min"]),
            PREFIX + "arms[1].trigger: is the name of a trigger of triggers.yml",
        ),
        (
            lambda d: _first(d).update(targeting={"segment": "nobody"}),
            PREFIX + "targeting.segment: no segment 'nobody'",
        ),
        (
            lambda d: _first(d).update(primary="converted_30d"),
            PREFIX + "primary: unknown metric 'converted_30d'",
        ),
        (
            _second_in_layer,
            "experiments.yml: experiment 'cart_reminder_2': layer: 'commerce_email' already runs "
            "'cart_reminder' until 2026-10-19 (experiments of one layer may not overlap)",
        ),
        (
            lambda d: d["metrics"][0].update(column="has_purchases"),
            "experiments.yml: metric 'converted_7d': column: unknown column 'has_purchases' "
            "of marts.fct_sessions",
        ),
        (
            lambda d: d["metrics"][1].update(kind="conversion"),
            "experiments.yml: metric 'revenue_7d': column: 'revenue' (decimal(18,4)) cannot be "
            "a conversion metric",
        ),
        (
            lambda d: _first(d)["guardrails"][0].update(better="smaller"),
            PREFIX + "guardrails[0].better: 'smaller' is not higher or lower",
        ),
        (
            lambda d: _first(d).update(primary=["converted_7d"]),
            PREFIX + "primary: unknown metric ['converted_7d']",
        ),
        (
            lambda d: _first(d).update(guardrails=5),
            PREFIX + "guardrails: expected a list of {metric, better, margin}",
        ),
        (
            lambda d: _first(d).update(start="2026-10-05T10:00:00"),
            PREFIX + "start: '2026-10-05T10:00:00' is not a date (YYYY-MM-DD)",
        ),
        (
            lambda d: d["metrics"][0].update(kind=["conversion"]),
            "experiments.yml: metric 'converted_7d': kind: ['conversion'] is not one of",
        ),
        (
            lambda d: _first(d).update(hypotesis="typo"),
            PREFIX + "experiment: unknown field 'hypotesis' (did you mean 'hypothesis'?)",
        ),
    ],
)
def test_bad_definitions_are_one_line_naming_file_experiment_and_field(
    tmp_path, change, message
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, change)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_shipped_file_is_valid() -> None:
    experiments = load_experiments(PROJECT_ROOT / "experiments.yml", **NAMES)
    cart, threshold, teaser = experiments.experiments
    assert threshold.triggers == {"product_lingerer", "product_lingerer_3min"}
    assert [(a.name, a.control, a.send, a.trigger) for a in threshold.arms] == [
        ("five_minutes", True, True, None),
        ("three_minutes", False, True, "product_lingerer_3min"),
    ]
    assert (cart.target_kind, cart.target, cart.salt) == (
        "trigger",
        "cart_abandoned",
        "cart_reminder",
    )
    assert [(a.name, a.control, a.send) for a in cart.arms] == [
        ("control", True, False),
        ("reminder", False, True),
    ]
    assert (teaser.target_kind, teaser.target) == ("segment", "subscribe_curious_readers")
    assert [(a.name, a.send, a.variant) for a in teaser.arms] == [
        ("control", False, None),
        ("teaser", True, "newsletter_teaser"),
    ]
    assert experiments.holdout == 0.05 and experiments.metrics["converted_7d"].window_days == 7


def test_check_command_lists_the_experiments_or_names_the_mistake(tmp_path) -> None:
    result = run_cli("experiment", "check", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cart_reminder: trigger cart_abandoned, 2026-10-05 to 2026-10-19" in result.stdout
    broken = tmp_path / "experiments.yml"
    document = yaml.safe_load(yaml.safe_dump(BASE))
    _first(document)["arms"][1]["weight"] = 0.4
    broken.write_text(yaml.safe_dump(document))
    result = run_cli(
        "experiment", "check", home=tmp_path, env={"MICROSEG_EXPERIMENTS_FILE": str(broken)}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: experiments.yml: experiment 'cart_reminder': arms: weights sum to 0.9, not 1"
    )
