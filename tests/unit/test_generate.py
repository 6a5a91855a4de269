"""The generator: deterministic, realistic, messy, and its ground truth is exactly right."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

import microseg.generate as generate_module
from microseg.config import Settings
from microseg.contract import event_contract
from microseg.generate import GeneratorConfig, generate
from microseg.generate.items import oracle_scores
from microseg.generate.truth import true_no_session_probability
from microseg.generate.visits import lapse_days
from microseg.generate.world import PLACEHOLDER_USER_IDS
from microseg.ingest import ingest_paths


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path) -> None:
    config = GeneratorConfig(users=60, days=2, seed=3)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    generate(GeneratorConfig(users=60, days=2, seed=4), tmp_path / "c")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert (
        digests(tmp_path / "a")["events_2026-10-01.jsonl.gz"]
        != (digests(tmp_path / "c")["events_2026-10-01.jsonl.gz"])
    )


def test_one_file_per_day_named_by_date(small_dataset) -> None:
    names = sorted(p.name for p in small_dataset.glob("events_*"))
    assert names == [f"events_2026-10-0{d}.jsonl.gz" for d in range(1, 6)]


@pytest.fixture(scope="module")
def warehouse(small_dataset, tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """The small data set ingested, with its ground truth attached as views."""
    home = tmp_path_factory.mktemp("gen_home")
    settings = Settings.from_env({"MICROSEG_HOME": str(home)})
    ingest_paths(settings, [small_dataset])
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    attach_truth(con, small_dataset / "ground_truth")
    yield con
    con.close()


def attach_truth(con: duckdb.DuckDBPyConnection, truth: Path) -> None:
    for name in ("people", "sessions", "shared_devices"):
        con.execute(f"create temp view truth_{name} as select * from '{truth / name}.parquet'")


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    return con.execute(sql).fetchone()[0]


def test_archetypes_drive_behavior(warehouse) -> None:
    """Archetypes differ the way their names say, in the events themselves."""
    rows = warehouse.execute(
        """
        with person_events as (
            select p.archetype, e.event_type, e.page_type
            from raw.events e
            join (select person_key, archetype, unnest(anonymous_ids) as anonymous_id
                  from truth_people) p using (anonymous_id)
        )
        select archetype,
               avg((page_type = 'product')::int) filter (where event_type = 'page_view'),
               avg((page_type = 'article')::int) filter (where event_type = 'page_view'),
               count(*) filter (where event_type = 'purchase')
        from person_events group by archetype
        """
    ).fetchall()
    by_type = {a: (product, article, purchases) for a, product, article, purchases in rows}
    assert set(by_type) >= {"deal_seeker", "browser", "loyal_customer", "researcher", "bouncer"}
    assert by_type["deal_seeker"][0] > by_type["researcher"][0]
    assert by_type["researcher"][1] > by_type["deal_seeker"][1]
    assert by_type["loyal_customer"][2] > by_type["bouncer"][2]


def test_propensity_is_visible_in_behavior(warehouse) -> None:
    """People with a higher latent propensity buy more: a model has something to learn."""
    corr = scalar(
        warehouse,
        """
        with buys as (
            select p.person_key, any_value(p.true_purchase_propensity) as propensity,
                   count(e.event_id) filter (where e.event_type = 'purchase') as purchases
            from (select person_key, true_purchase_propensity, unnest(anonymous_ids) as anonymous_id
                  from truth_people where not is_bot) p
            left join raw.events e using (anonymous_id)
            group by p.person_key
        )
        select corr(propensity, purchases) from buys
        """,
    )
    assert corr > 0.4


def test_realistic_mess_is_present(warehouse, small_dataset) -> None:
    """Each kind of mess, counted in what was loaded, is exactly what the truth planted."""
    truth = small_dataset / "ground_truth"
    # late sessions: every event of a session delivered a day or more late, and no other
    late = warehouse.execute(
        "select count(*), count(distinct anonymous_id) from raw.events "
        "where received_at - event_at > interval 1 day"
    ).fetchone()
    assert (
        late
        == warehouse.execute(
            "select sum(n_events), count(distinct anonymous_id) from truth_sessions "
            "where late_days > 0"
        ).fetchone()
    )
    assert late[0] > 0
    assert scalar(warehouse, "select sum(rows_duplicate) from raw.load_manifest") == scalar(
        warehouse, f"select sum(rows_duplicate) from '{truth}/files.csv'"
    )
    assert scalar(warehouse, "select count(*) from raw.events_quarantine") == 25  # 5 per file
    placeholders = warehouse.execute(
        "select distinct user_id from raw.events where user_id in ?", [PLACEHOLDER_USER_IDS]
    ).fetchall()
    assert sorted(p for (p,) in placeholders) == sorted(PLACEHOLDER_USER_IDS)  # each one sent
    # bots: one device, 150+ page views in a day, seconds apart: each bot session of the truth
    bots = scalar(
        warehouse,
        """select count(*) from (
        select anonymous_id, event_at::date from raw.events where event_type = 'page_view'
        group by all having count(*) >= 150)""",
    )
    assert bots == scalar(warehouse, "select count(*) from truth_sessions where is_bot") > 0
    # out-of-order lines: within a file, event_at goes backwards somewhere
    backwards = scalar(
        warehouse,
        """select count(*) from (
        select event_at < lag(event_at) over (partition by source_file order by source_line) b
        from raw.events) where b""",
    )
    assert backwards > 100


def test_behaviors_are_all_there(warehouse) -> None:
    counts = dict(
        warehouse.execute("select event_type, count(*) from raw.events group by 1").fetchall()
    )
    # every event type of the contract except remove_from_cart, which the site never sends
    for event_type in set(event_contract().event_types) - {"remove_from_cart"}:
        assert counts.get(event_type, 0) > 0, event_type
    assert (
        scalar(
            warehouse,
            "select min((properties->>'$.revenue')::double) from raw.events "
            "where event_type = 'purchase'",
        )
        > 0
    )
    assert (
        scalar(
            warehouse,
            "select min((properties->>'$.hover_ms')::double) from raw.events "
            "where event_type = 'hover'",
        )
        > 0
    )
    assert (
        scalar(
            warehouse,
            "select count(distinct properties->>'$.query') from raw.events "
            "where event_type = 'search'",
        )
        > 50
    )
    assert (
        scalar(
            warehouse,
            "select count(*) from raw.events where event_type = 'consent' "
            "and (properties->>'$.purposes.personalization') = 'false'",
        )
        > 0
    )


def test_identities_are_multi_device_and_shared(warehouse) -> None:
    # registered multi-device people: every one of their devices logs in as them
    mismatched = scalar(
        warehouse,
        """
        with truth as (
            select user_id, unnest(anonymous_ids) as anonymous_id from truth_people
            where is_registered and len(anonymous_ids) > 1
        )
        select count(*) from truth t
        where t.anonymous_id not in (select anonymous_id from truth_shared_devices)
          and not exists (select 1 from raw.events e where e.anonymous_id = t.anonymous_id
                          and e.user_id = t.user_id and e.event_type = 'identify')""",
    )
    assert mismatched == 0
    assert (
        scalar(
            warehouse,
            "select count(*) from truth_people where is_registered and len(anonymous_ids) > 1",
        )
        > 20
    )
    # shared devices carry two different real user ids
    shared = scalar(
        warehouse,
        """select count(*) from (
        select anonymous_id from raw.events where user_id like 'user_%'
        group by 1 having count(distinct user_id) >= 2)""",
    )
    assert shared == scalar(warehouse, "select count(*) from truth_shared_devices") > 0
    # logins happen mid-session: the same session has anonymous events before the identify
    before_login = scalar(
        warehouse,
        """
        select count(*) from truth_sessions s
        where s.login_session and exists (
            select 1 from raw.events e where e.anonymous_id = s.anonymous_id
              and coalesce(e.user_id, '') not like 'user_%' and e.event_type = 'page_view'
              and e.event_at between s.session_start_at - interval 1 second
                                 and s.session_end_at)""",
    )
    assert before_login == scalar(
        warehouse, "select count(*) from truth_sessions where login_session"
    )


SESSION_EVENTS = """
    with s as (
        select row_number() over () as sid, * from truth_sessions
        where anonymous_id not in (select anonymous_id from truth_shared_devices)
    )
    select s.sid, s.subscribe_curious, s.cart_abandon, s.bounce, s.product_hesitation,
           s.deep_read, e.*
    from s join raw.events e
      on e.anonymous_id = s.anonymous_id
     and e.event_at between s.session_start_at - interval 1 second
                        and s.session_end_at + interval 1 second
"""


def sessions_found_and_planted(con: duckdb.DuckDBPyConnection) -> tuple[list, list]:
    """Per unshared device: the sessions a 30-minute timeout finds in raw.events, and the
    truth's."""
    found = con.execute("""
        with e as (
            select anonymous_id, event_at,
                   coalesce(event_at - lag(event_at) over w > interval 30 minutes, true) as new
            from raw.events
            where anonymous_id not in (select anonymous_id from truth_shared_devices)
            window w as (partition by anonymous_id order by event_at)
        )
        select anonymous_id, count(*) filter (where new) from e group by 1 order by 1
    """).fetchall()
    planted = con.execute("""
        select anonymous_id, count(*) from truth_sessions
        where anonymous_id not in (select anonymous_id from truth_shared_devices)
        group by 1 order by 1
    """).fetchall()
    return found, planted


def test_sessions_are_what_a_30_minute_timeout_finds(warehouse) -> None:
    """Sessionizing each (unshared) device with a 30-minute timeout finds the planted ones."""
    found, planted = sessions_found_and_planted(warehouse)
    assert found == planted
    # and every loaded event belongs to exactly one planted session
    assigned = scalar(warehouse, f"select count(*) from ({SESSION_EVENTS})")
    total = scalar(
        warehouse,
        "select count(*) from raw.events where anonymous_id not in "
        "(select anonymous_id from truth_shared_devices)",
    )
    assert assigned == total


# Per session (by its SESSION_EVENTS sid), each rule's measure on the raw events: the most
# article page views opened within 10 minutes, cta_subscribe hovers, the longest product page
# without add_to_cart, the longest scrolled article with a related click, the longest wait
# from an add_to_cart to the next checkout_start, page views and span.
SESSION_MEASURES = f"""
    with e as ({SESSION_EVENTS}),
    pages as (
        select *, sum((event_type = 'page_view')::int) over
                  (partition by sid order by event_at, event_type <> 'page_view') as page_no
        from e
    ),
    per_page as (
        select sid, page_no,
            any_value(page_type) filter (where event_type = 'page_view') as page_type,
            min(event_at) filter (where event_type = 'page_view') as opened_at,
            max(event_at) as last_at,
            coalesce(max((properties ->> '$.scroll_percent')::double)
                     filter (where event_type = 'scroll'), 0) as scroll,
            bool_or(event_type = 'click' and element_id = 'related_article') as related,
            count(*) filter (where event_type = 'add_to_cart') as carts
        from pages group by sid, page_no
    ),
    timed as (
        select *, epoch(coalesce(lead(opened_at) over (partition by sid order by page_no),
                                 last_at) - opened_at) as dwell_s,
            count(*) filter (where page_type = 'article') over (
                partition by sid order by opened_at
                range between interval 10 minute preceding and current row) as articles_10m
        from per_page
    ),
    carts as (
        select sid, epoch(coalesce(min(event_at) filter (where event_type = 'checkout_start')
                          over (partition by sid order by event_at
                                rows between current row and unbounded following),
                          timestamp '2100-01-01') - event_at) as wait_s, event_type
        from e where event_type in ('add_to_cart', 'checkout_start')
    )
    select sid,
        any_value(t.subscribe_curious) as subscribe_curious,
        any_value(t.deep_read) as deep_read,
        any_value(t.product_hesitation) as product_hesitation,
        any_value(t.cart_abandon) as cart_abandon,
        any_value(t.bounce) as bounce,
        (select max(articles_10m) filter (where page_type = 'article') from timed
         where timed.sid = t.sid) as articles_10m,
        count(*) filter (where event_type = 'hover' and element_id = 'cta_subscribe')
            as subscribe_hovers,
        (select max(dwell_s) filter (where page_type = 'product' and carts = 0) from timed
         where timed.sid = t.sid) as product_dwell_s,
        (select max(dwell_s) filter (where page_type = 'article' and scroll >= 90 and related)
         from timed where timed.sid = t.sid) as deep_dwell_s,
        (select max(wait_s) filter (where event_type = 'add_to_cart') from carts
         where carts.sid = t.sid) as cart_wait_s,
        count(*) filter (where event_type = 'page_view') as page_views,
        epoch(max(event_at) - min(event_at)) as span_s
    from e as t group by sid
"""


def test_truth_says_which_sessions_meet_each_rule(warehouse) -> None:
    """The truth's session flags are the default segments' session rules applied to the raw
    events, so segment tests can compare memberships with the truth exactly."""
    rows = warehouse.execute(f"""
        with m as ({SESSION_MEASURES})
        select
            count(*) filter (where subscribe_curious
                             <> (coalesce(articles_10m, 0) >= 3 and subscribe_hovers >= 2)),
            count(*) filter (where deep_read <> coalesce(deep_dwell_s >= 180, false)),
            count(*) filter (where product_hesitation <> coalesce(product_dwell_s > 120, false)),
            count(*) filter (where cart_abandon <> coalesce(cart_wait_s > 900, false)),
            count(*) filter (where bounce <> (page_views = 1 and span_s < 10)),
            count(*) filter (where subscribe_curious), count(*) filter (where deep_read),
            count(*) filter (where product_hesitation), count(*) filter (where cart_abandon),
            count(*) filter (where bounce)
        from m
    """).fetchone()
    assert rows[:5] == (0, 0, 0, 0, 0)
    assert min(rows[5:]) >= 10, rows[5:]


def test_every_threshold_has_sessions_just_inside_and_just_outside(warehouse) -> None:
    """Moving any threshold of the default segments by one unit (a second; a minute for the
    cart's wait) changes some session's verdict: for each, sessions within that unit on both
    sides (thresholds.py)."""
    sides = warehouse.execute(f"""
        with m as ({SESSION_MEASURES}),
        near as (
            select 'product dwell > 120 s' as rule, product_dwell_s - 120 as beyond from m
            union all select 'deep read >= 180 s', deep_dwell_s - 180 from m
            union all select 'cart wait > 15 min', (cart_wait_s - 900) / 60 from m
            union all select 'one-page session < 10 s', 10 - span_s from m where page_views = 1
        )
        select rule, count(*) filter (where beyond > 0 and beyond < 1),
                     count(*) filter (where beyond < 0 and beyond > -1)
        from near group by rule order by rule
    """).fetchall()
    assert len(sides) == 4
    for rule, inside, outside in sides:
        assert inside >= 3 and outside >= 3, (rule, inside, outside)
    # 3 articles within 10 minutes: sessions whose third article opened 599-601 s after the first
    window = scalar(
        warehouse,
        f"""
        with m as ({SESSION_MEASURES})
        select count(*) filter (where subscribe_hovers >= 2 and articles_10m = 2)
        from m
        """,
    )
    assert window >= 3


def test_every_generated_event_is_in_some_file(warehouse) -> None:
    """Nothing the ground truth counts is missing from the dumps (late sessions included)."""
    planted = scalar(warehouse, "select sum(n_events) from truth_sessions")
    loaded = scalar(warehouse, "select count(*) from raw.events")
    assert loaded == planted


def test_items_come_from_one_catalog_and_follow_tastes(warehouse, small_dataset) -> None:
    """An item keeps its type and category on every page; a product page's sku is its content
    id; and what people view follows the oracle: its top items are viewed far more often than
    chance (tastes are learnable), while no person's views are all in the oracle's top."""
    truth = small_dataset / "ground_truth"
    warehouse.execute(f"create temp view truth_items as select * from '{truth}/items.parquet'")
    mixed = scalar(
        warehouse,
        """select count(*) from (
               select content_id from raw.events where content_id is not null
               group by content_id
               having count(distinct page_type) > 1 or count(distinct content_category) > 1)""",
    )
    assert mixed == 0
    off_catalog = scalar(
        warehouse,
        """select count(*) from raw.events e
           where content_id is not null and not exists (
               select 1 from truth_items i
               where i.item_id = e.content_id and i.item_type = e.page_type
                 and i.category = e.content_category)""",
    )
    assert off_catalog == 0
    sku_off = scalar(
        warehouse,
        """select count(*) from raw.events
           where page_type = 'product' and event_type in ('page_view', 'add_to_cart')
             and (properties ->> '$.product_id') is distinct from content_id""",
    )
    assert sku_off == 0
    keys, items, scores = oracle_scores(truth)
    top = np.argsort(-scores, axis=1)[:, :20]  # 20 of 440 items: 4.5% by chance
    oracle_top = pd.DataFrame({"person_key": np.repeat(keys, 20), "content_id": items[top.ravel()]})
    warehouse.register("oracle_top", oracle_top)
    share = scalar(
        warehouse,
        """with views as (
               select p.person_key, e.content_id
               from raw.events e join truth_people p on e.user_id = p.user_id
               where e.event_type = 'page_view' and e.content_id is not null)
           select avg((o.content_id is not null)::int) from views v
           left join oracle_top o using (person_key, content_id)""",
    )
    assert 0.25 < share < 0.9


def test_a_planted_lift_brings_treated_abandoners_back_to_buy_within_the_window(
    small_dataset: Path,
) -> None:
    """Each planted purchase (conftest PLANTED_LIFT): a purchase-only session of the cart's
    person on the cart's device, after the message and inside the metric's one-day window;
    its person is in the planted arm by the pipeline's hash."""
    from microseg.config import PROJECT_ROOT
    from microseg.experiments.assignment import arm_index, bucket
    from tests.conftest import PLANTED_LIFT

    truth = small_dataset / "ground_truth"
    effects = pd.read_parquet(truth / "experiment_effects.parquet")
    sessions = pd.read_parquet(truth / "sessions.parquet").set_index("session")
    cart = sessions.loc[effects.cart_session].reset_index()
    bought = sessions.loc[effects.converted_session].reset_index()
    assert len(effects) >= 10 and cart.cart_abandon.all()
    assert bought.purchase.all() and not bought[["cart_abandon", "bounce", "deep_read"]].any().any()
    assert (bought.person_key == cart.person_key).all()
    assert (bought.anonymous_id == cart.anonymous_id).all()
    message = cart.session_end_at + pd.Timedelta(minutes=15)
    assert (bought.session_start_at > message).all()
    assert (bought.session_start_at < cart.session_start_at + pd.Timedelta(days=1)).all()
    _, experiment, arm, _ = PLANTED_LIFT
    document = yaml.safe_load((PROJECT_ROOT / "experiments.yml").read_text())
    [spec] = [e for e in document["experiments"] if e["name"] == experiment]
    names = [a["name"] for a in spec["arms"]]
    weights = [a["weight"] for a in spec["arms"]]
    assert all(
        names[arm_index(bucket(spec.get("salt", experiment), p), weights)] == arm
        for p in effects.person_id
    )


def test_planted_lapses_end_visits_for_good_and_the_oracle_knows_the_odds(tmp_path) -> None:
    """--plant-churn: no session on or after a person's lapse date, the share that lapses is
    the hazard's, bots never do; and the oracle's chance of a quiet week (what churn_risk is
    measured against) is how often a quiet week happens."""
    config = GeneratorConfig(users=1500, days=14, seed=9, lapse_hazard=0.03)
    generate(config, tmp_path)
    people = pd.read_parquet(tmp_path / "ground_truth/people.parquet")
    sessions = pd.read_parquet(tmp_path / "ground_truth/sessions.parquet")
    last_visit = sessions.groupby("person_key").session_start_at.max().rename("last_visit")
    lapsed = people[people.lapse_date.notna()].join(last_visit, on="person_key")
    visited = lapsed.dropna(subset=["last_visit"])
    assert len(visited) > 300 and (visited.last_visit < visited.lapse_date).all()
    humans = people[~people.is_bot]
    assert people[people.is_bot].lapse_date.isna().all()
    assert humans.lapse_date.notna().mean() == pytest.approx(1 - 0.97**14, abs=0.04)

    as_of = pd.Timestamp(config.start) + pd.Timedelta(days=7)
    week = sessions[sessions.session_start_at >= as_of]  # the last 7 days
    quiet = ~people.person_key.isin(week.person_key)
    odds = true_no_session_probability(people, as_of.date(), 7)
    assert (odds[people.lapse_date.lt(as_of).to_numpy()] == 1).all()
    assert quiet[people.lapse_date.lt(as_of)].all()
    active = (~people.lapse_date.lt(as_of) & ~people.is_bot).to_numpy()
    assert 0.05 < quiet[active].mean() < 0.5
    assert odds[active].mean() == pytest.approx(quiet[active].mean(), abs=0.03)
    # and by archetype: each one's mean chance is its observed share
    by_archetype = pd.DataFrame({"archetype": people.archetype, "odds": odds, "quiet": quiet})
    means = by_archetype[active].groupby("archetype").mean()
    assert (means.odds - means.quiet).abs().max() < 0.06, means
    without = GeneratorConfig(users=1500, days=14, seed=9)
    assert set(lapse_days(without, people.archetype.to_numpy())) == {14}  # none lapses


def test_a_population_drawn_in_cohorts_is_one_population(tmp_path, monkeypatch) -> None:
    """Big populations are drawn a cohort at a time (memory holds one); together they are one
    data set: every id unique, one catalog, the files' accounting exact, every planted
    session what a 30-minute timeout finds."""
    monkeypatch.setattr(generate_module, "COHORT_PERSON_DAYS", 120)  # 120 x 3 days: 3 cohorts
    config = GeneratorConfig(users=120, days=3, seed=5)
    summary = generate(config, tmp_path / "cohorts")
    truth = summary.ground_truth_dir
    assert len(generate_module.cohorts(config)) == 3
    people = pd.read_parquet(truth / "people.parquet")
    assert len(people) == summary.persons == 120 + 3  # a bot per cohort
    assert people.person_key.is_unique and people.user_id.dropna().is_unique
    assert set(pd.read_parquet(truth / "tastes.parquet").person_key) == set(people.person_key)
    sessions = pd.read_parquet(truth / "sessions.parquet")
    assert sorted(sessions.session) == list(range(summary.sessions))
    devices = people.explode("anonymous_ids").anonymous_ids.dropna()
    assert devices.is_unique  # each device's id is its cohort's: none repeats across cohorts
    monkeypatch.setattr(generate_module, "COHORT_PERSON_DAYS", 10**6)
    whole = generate(config, tmp_path / "whole").ground_truth_dir
    assert (truth / "items.parquet").read_bytes() == (whole / "items.parquet").read_bytes()

    settings = Settings.from_env({"MICROSEG_HOME": str(tmp_path / "home")})
    ingest_paths(settings, [tmp_path / "cohorts"])
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        counts = "rows_read, rows_loaded, rows_duplicate, rows_quarantined"
        loaded = con.execute(f"select file_name, {counts} from raw.load_manifest order by 1")
        expected = pd.read_csv(truth / "files.csv").sort_values("file_name")
        assert loaded.fetchall() == [
            tuple(row)
            for row in expected[["file_name", *counts.split(", ")]].itertuples(index=False)
        ]
        assert scalar(con, "select count(*) from raw.events") == sessions.n_events.sum()
        assert (
            scalar(con, "select count(distinct event_id) from raw.events")
            == sessions.n_events.sum()
        )
        attach_truth(con, truth)
        found, planted = sessions_found_and_planted(con)
        assert found == planted and len(found) > 100
