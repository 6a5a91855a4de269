"""`microseg experiment apply`: a "ship ARM" decision becomes changes to the definitions files,
printed or written (layout and comments kept), recorded once per decision."""

from __future__ import annotations

import difflib
import re
import shutil
from datetime import date

import duckdb
import pytest
import yaml

from microseg.config import PROJECT_ROOT, Settings
from microseg.errors import UsageError
from microseg.experiments.analyze import DECISIONS_DDL
from microseg.experiments.apply import apply_decision
from microseg.experiments.grammar import load_configured_experiments
from tests.helpers import query, run_cli

DECIDED = date(2026, 10, 12)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Settings:
    """The repository's definitions files copied beside a warehouse holding decisions."""
    for name in ("experiments.yml", "triggers.yml", "segments.yml"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
        monkeypatch.setenv(f"MICROSEG_{name.split('.')[0].upper()}_FILE", str(tmp_path / name))
    monkeypatch.setenv("MICROSEG_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    settings.home.mkdir()
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create schema marts")
        con.execute(DECISIONS_DDL)
        con.execute(
            """insert into marts.experiment_decisions values
               ('2026-10-10', 'cart_reminder', 'keep running', 'no arm distinguishable', 0.5, 300),
               (?, 'cart_reminder', 'ship reminder', 'converted_7d +12%', 0.4, 900)""",
            [DECIDED],
        )
    return settings


def _apply(settings: Settings, as_of: date | None = None, write: bool = False):
    return apply_decision(
        settings, load_configured_experiments(settings), "cart_reminder", as_of, write=write
    )


def test_printed_changes_are_recorded_once_and_can_still_be_written(home) -> None:
    before = {p: p.read_text() for p in (home.experiments_file, home.triggers_file)}
    done = _apply(home)  # the latest decision: ship reminder
    assert done.decided_on == DECIDED and not done.written and done.applied_before is None
    assert [c.line() for c in done.changes] == [
        "experiments.yml: experiment 'cart_reminder': end: 2026-10-19 -> 2026-10-12",
        "triggers.yml: trigger 'cart_abandoned': variant: (none) -> plain",
    ]
    assert {p: p.read_text() for p in before} == before
    again = _apply(home, DECIDED)
    assert again.applied_before is not None and again.applied_before[0]
    assert query(home, "select arm, written, changes from marts.experiment_applications") == [
        ("reminder", False, [c.line() for c in done.changes])
    ]
    # a printed decision can still be written, once
    written = _apply(home, DECIDED, write=True)
    assert written.written and written.applied_before is None
    assert {p: p.read_text() for p in before} != before
    assert query(home, "select arm, written from marts.experiment_applications") == [
        ("reminder", True)
    ]
    assert _apply(home, DECIDED, write=True).applied_before is not None
    kept = _apply(home, date(2026, 10, 10))
    assert (kept.decision, kept.changes) == ("keep running", ())
    with pytest.raises(UsageError, match="no decision for cart_reminder on 2026-10-11"):
        _apply(home, date(2026, 10, 11))


def test_written_changes_touch_only_those_lines_and_the_next_run_uses_them(home) -> None:
    before = {p: p.read_text() for p in (home.experiments_file, home.triggers_file)}
    result = run_cli("experiment", "apply", "cart_reminder", "--write", home=home.home)
    assert result.returncode == 0, result.stderr
    assert "written to the files" in result.stdout
    changed = {
        p.name: [
            line
            for line in difflib.unified_diff(text.splitlines(), p.read_text().splitlines(), n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        for p, text in before.items()
    }
    assert changed == {
        "experiments.yml": ["-    end: 2026-10-19", "+    end: 2026-10-12"],
        "triggers.yml": ["+    variant: plain"],
    }
    experiments = load_configured_experiments(home)
    assert experiments.experiments[0].end == DECIDED
    document = yaml.safe_load(home.triggers_file.read_text())
    assert next(t for t in document["triggers"] if t["name"] == "cart_abandoned")["variant"] == (
        "plain"
    )
    assert not list(home.experiments_file.parent.glob(".*.applying"))


def test_an_arm_that_won_by_sending_nothing_is_left_to_a_person(home) -> None:
    document = yaml.safe_load(home.experiments_file.read_text())
    document["experiments"][0]["arms"][1]["send"] = False  # reminder: withheld too
    home.experiments_file.write_text(yaml.safe_dump(document))
    hand = "make this change by hand: triggers.yml: trigger 'cart_abandoned': remove it"
    with pytest.raises(UsageError, match=re.escape(hand)):
        _apply(home, write=True)
    assert query(home, "select count(*) from marts.experiment_applications") == [(0,)]
    printed = _apply(home)
    assert printed.changes[-1].line().endswith("remove it (the arm that sent nothing won)")


def test_a_threshold_arm_that_won_gives_the_trigger_its_definition(home) -> None:
    with duckdb.connect(str(home.warehouse_path)) as con:
        con.execute(
            """insert into marts.experiment_decisions values
               (?, 'lingerer_threshold', 'ship three_minutes', 'converted_7d +9%', 0.4, 900)""",
            [DECIDED],
        )
    done = apply_decision(home, load_configured_experiments(home), "lingerer_threshold", write=True)
    assert [c.line() for c in done.changes] == [
        "experiments.yml: experiment 'lingerer_threshold': end: 2026-10-19 -> 2026-10-12",
        "triggers.yml: trigger 'product_lingerer': when: "
        '{"dwell": {"page_type": "product"}, "without": "add_to_cart", ">": 300, '
        '"as": "product_dwell_s"} -> {"dwell": {"page_type": "product"}, '
        '"without": "add_to_cart", ">": 180, "as": "product_dwell_s"}',
    ]
    document = yaml.safe_load(home.triggers_file.read_text())
    whens = {t["name"]: t["when"] for t in document["triggers"]}
    assert whens["product_lingerer"] == whens["product_lingerer_3min"]
    assert load_configured_experiments(home).experiments[1].end == DECIDED
