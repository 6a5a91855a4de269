"""Writing the dumps: canonical or Segment JSON, CSV, Parquet, with planted junk lines."""

from __future__ import annotations

import gzip
from datetime import timedelta
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from microseg.generate.delivery import day_of
from microseg.generate.items import page_category
from microseg.generate.population import declines_marketing
from microseg.generate.world import (
    CAMPAIGNS,
    CATEGORIES,
    COUNTRIES,
    DEVICE_TYPES,
    ELEMENTS,
    EVENT_TYPES,
    PAGE_TYPES,
    PLACEHOLDER_USER_IDS,
    REFERRERS,
    SEARCH_WORDS,
    GeneratorConfig,
)

_CANONICAL_SQL = """
select
    md5('{seed}:' || seq) as event_id,
    event_type,
    strftime({epoch} + to_microseconds(cast(t * 1e6 as bigint)),
             '%Y-%m-%dT%H:%M:%S.%gZ') as event_at,
    strftime({epoch} + to_microseconds(cast(received_t * 1e6 as bigint)),
             '%Y-%m-%dT%H:%M:%S.%gZ') as received_at,
    'anon_' || left(md5('{seed}:device:' || device), 20) as anonymous_id,
    case when logged_in then 'user_' || lpad(person::varchar, 7, '0')
         else placeholder_user_id end as user_id,
    'https://shop.example.com/' || page_type || '/' || content
        -- newsletter links of logged-in readers carry their email (scrubbed at ingest)
        || case when campaign <> '' and logged_in
                then '?email=user_' || lpad(person::varchar, 7, '0') || '@mail.example' else ''
           end as page_url,
    page_type,
    case when page_type in ('article', 'video') then page_type || '_' || content
         when page_type = 'product' then 'sku_' || content end as content_id,
    content_category,
    nullif(element, '') as element_id,
    device_type,
    country,
    nullif(referrer, '') as referrer,
    case when campaign <> '' then 'newsletter' end as utm_source,
    case when campaign <> '' then 'email' end as utm_medium,
    nullif(campaign, '') as utm_campaign,
    map_from_entries(list_filter([
        struct_pack(k := 'scroll_percent', v := to_json(scroll_percent)),
        struct_pack(k := 'hover_ms', v := to_json(hover_ms::bigint)),
        struct_pack(k := 'video_id', v := to_json(case when duration_s is not null
                                                   then 'video_' || content end)),
        struct_pack(k := 'position_s', v := to_json(position_s)),
        struct_pack(k := 'duration_s', v := to_json(duration_s)),
        struct_pack(k := 'query', v := to_json(query)),
        struct_pack(k := 'product_id', v := to_json('sku_' || product::bigint)),
        struct_pack(k := 'price', v := to_json(price)),
        struct_pack(k := 'quantity', v := to_json(quantity::bigint)),
        struct_pack(k := 'revenue', v := to_json(revenue)),
        struct_pack(k := 'currency', v := to_json(case when revenue is not null or price is not null
                                                   then 'USD' end)),
        -- personal data trackers send: an email with logins and forms, the client's IP
        struct_pack(k := 'email', v := to_json(case when event_type in ('identify', 'form_submit')
            and logged_in then 'user_' || lpad(person::varchar, 7, '0') || '@mail.example' end)),
        struct_pack(k := 'ip', v := to_json(case when event_type = 'page_view'
            then '198.51.' || (device // 256 % 256) || '.' || (device % 256) end)),
        -- consent: 0 withdraws everything but analytics, 1 grants all, 2 all but marketing
        struct_pack(k := 'purposes', v := case when consent is not null then json_object(
            'personalization', consent >= 1, 'marketing', consent = 1, 'analytics', true) end)
    ], x -> x.v is not null)) as properties,
    sort_key,
    file_day
from events_coded
"""

# Segment / RudderStack spec messages built from canonical rows (inverse of the ingest mapping).
_SPEC_SQL = """
select json_object(
    'type', case event_type when 'page_view' then 'page' when 'identify' then 'identify'
                 else 'track' end,
    'event', case event_type when 'add_to_cart' then 'Product Added'
        when 'remove_from_cart' then 'Product Removed' when 'checkout_start' then 'Checkout Started'
        when 'purchase' then 'Order Completed' when 'search' then 'Products Searched'
        when 'video_play' then 'Video Playback Started'
        when 'video_pause' then 'Video Playback Paused'
        when 'video_progress' then 'Video Content Playing'
        when 'video_complete' then 'Video Playback Completed'
        when 'form_submit' then 'Form Submitted'
        when 'consent' then 'Segment Consent Preference Updated'
        when 'page_view' then null when 'identify' then null else event_type end,
    'messageId', event_id, 'timestamp', event_at, 'receivedAt', received_at,
    'anonymousId', anonymous_id, 'userId', user_id,
    'properties', case when event_type <> 'identify' then json_merge_patch(
        coalesce(to_json(properties), '{{}}'),
        json_object('page_type', page_type, 'content_id', content_id,
                    'category', content_category, 'element_id', element_id,
                    'purposes', null)) end,
    'context', json_object(
        'consent', case when event_type = 'consent' then json_object(
            'categoryPreferences', to_json(properties)->'$.purposes') end,
        'page', json_object('url', page_url, 'referrer', referrer),
        'device', json_object('type', device_type),
        'location', json_object('country', country),
        'campaign', json_object('source', utm_source, 'medium', utm_medium, 'name', utm_campaign))
)::varchar as line, sort_key
from canonical
"""


def _search_query(code: np.ndarray) -> np.ndarray:
    """The words a search code stands for: 1-4 of SEARCH_WORDS, picked by its base-7 digits."""
    words = SEARCH_WORDS
    n_words = 1 + code % 4
    w1, w2, w3, w4 = (words[(code // 7**i) % len(words)] for i in range(1, 5))
    joined = np.char.add(np.char.add(np.char.add(w1, " "), w2), " ")
    return np.select(
        [n_words == 1, n_words == 2, n_words == 3],
        [w1, np.char.add(np.char.add(w1, " "), w2), np.char.add(joined, w3)],
        np.char.add(np.char.add(joined, w3), np.char.add(" ", w4)),
    )


def _labels(values: tuple[str, ...], codes: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=values)


def coded_frame(
    ev: pd.DataFrame, s: pd.DataFrame, people: pd.DataFrame, devices: pd.DataFrame, rng
) -> pd.DataFrame:
    """Map integer codes to the strings the files carry: categoricals (a byte a row, not a
    string object), which stage_events turns into text inside DuckDB."""
    person = ev.person.to_numpy()
    number = people.number.to_numpy()[person]  # what user ids carry
    session = ev.session.to_numpy()
    landing = ~pd.Series(session).duplicated().to_numpy()
    page_cat = page_category(ev.page.to_numpy(), people.favorite_category.to_numpy()[person])
    # a broken tracker sometimes sends placeholder user ids on anonymous events
    placeholder = np.where(
        ~ev.logged_in.to_numpy() & (rng.random(len(ev)) < 0.003),
        rng.integers(0, len(PLACEHOLDER_USER_IDS), len(ev)),
        -1,
    )
    query = np.full(len(ev), None)
    q = ev.get("query")
    if q is not None:  # strings for the search events only (a few in a hundred)
        searched = np.flatnonzero(q.notna().to_numpy())
        query[searched] = _search_query(q.to_numpy()[searched].astype(np.int64))

    def col(name):
        return ev[name].to_numpy() if name in ev else np.full(len(ev), np.nan)

    return pd.DataFrame(
        {
            "seq": ev.seq.to_numpy(),
            "event_type": _labels(EVENT_TYPES, ev.event.to_numpy()),
            "t": ev.t.to_numpy(),
            "received_t": ev.received_t.to_numpy(),
            "device": ev.device.to_numpy(),
            "person": number,
            "logged_in": ev.logged_in.to_numpy(),
            "page_type": _labels(PAGE_TYPES, ev.page_type.to_numpy()),
            "content": ev.content.to_numpy(),
            "content_category": _labels(CATEGORIES, page_cat),
            "element": _labels(ELEMENTS, np.nan_to_num(col("element"), nan=0).astype(int)),
            "device_type": _labels(
                DEVICE_TYPES, devices.device_type.to_numpy()[ev.device.to_numpy()]
            ),
            "country": _labels(COUNTRIES, people.country.to_numpy()[person]),
            # only a session's first event carries its referrer and campaign (code 0: "")
            "referrer": _labels(REFERRERS, np.where(landing, s.channel.to_numpy()[session], 0)),
            "campaign": _labels(CAMPAIGNS, np.where(landing, s.campaign.to_numpy()[session], 0)),
            "scroll_percent": col("scroll_percent"),
            "hover_ms": col("hover_ms"),
            "position_s": col("position_s"),
            "duration_s": col("duration_s"),
            "query": query,
            "product": col("product"),
            "price": col("price"),
            "quantity": col("quantity"),
            "revenue": col("revenue"),
            "consent": np.where(
                (col("consent") == 1) & declines_marketing(number), 2, col("consent")
            ),
            "placeholder_user_id": _labels(PLACEHOLDER_USER_IDS, placeholder),  # -1: null
            "file_day": day_of(ev.received_t.to_numpy()),
            "sort_key": ev.received_t.to_numpy() + rng.uniform(0, 120, len(ev)),
        }
    )


_JUNK = (  # lines planted in every JSON file; each must be quarantined with a reason
    '{"event_id": "broken_{k}", "event_type": "page_vi',
    '{"event_id": "noid_{k}", "event_type": "page_view", "event_at": "{ts}"}',
    '{"event_id": "bad_type_{k}", "event_type": "pageView", "event_at": "{ts}", '
    '"anonymous_id": "a"}',
    '{"event_id": "", "event_type": "click", "event_at": "{ts}", "anonymous_id": "a"}',
    '{"event_id": "bad_time_{k}", "event_type": "click", "event_at": "last tuesday", '
    '"anonymous_id": "a"}',
)


LINES_PER_BATCH = 200_000  # of a day file, held at once while it is written


def _write_lines(path: Path, batches: pa.RecordBatchReader) -> None:
    """Write the batches' first column as newline-terminated lines (gzip when the name says
    so), a batch at a time, no row loop."""
    opener = (
        partial(gzip.GzipFile, path, "wb", compresslevel=1, mtime=0)
        if path.name.endswith(".gz")
        else partial(open, path, "wb")
    )
    with opener() as handle:
        for batch in batches:
            terminated = pc.binary_join_element_wise(batch.column(0), "", "\n")
            terminated = terminated.cast(pa.large_string())
            offsets = np.frombuffer(terminated.buffers()[1], dtype=np.int64)
            first = offsets[terminated.offset]
            last = offsets[terminated.offset + len(terminated)]
            handle.write(memoryview(terminated.buffers()[2])[first:last] if last > first else b"")


def _event_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = con.execute("select column_name from (describe day_rows)").fetchall()
    return [n for (n,) in names if n != "sort_key"]


def stage_events(con: duckdb.DuckDBPyConnection, coded: pd.DataFrame, config: GeneratorConfig):
    """Add a cohort's events, as the dumps carry them, to the table `canonical` (on disk, so
    that the files are written from all cohorts while only one is held in memory)."""
    epoch = f"timestamp '{config.start.isoformat()} 00:00:00'"
    canonical = _CANONICAL_SQL.format(seed=config.seed, epoch=epoch)
    con.register("coded", coded)
    labels = [c for c in coded if isinstance(coded[c].dtype, pd.CategoricalDtype)]
    con.execute(  # categoricals arrive as ENUMs: the files carry their text
        "create or replace temp view events_coded as select * replace ("
        + ", ".join(f"{c}::varchar as {c}" for c in labels)
        + ") from coded"
    )
    con.execute(f"create table if not exists canonical as select * from ({canonical}) limit 0")
    con.execute(f"insert into canonical {canonical}")
    con.execute("drop view events_coded")
    con.unregister("coded")


def write_files(con, config: GeneratorConfig, out: Path, rng) -> tuple[list[Path], pd.DataFrame]:
    """One file per received day from the staged events; returns the files and their expected
    row accounting (junk lines: quarantined)."""
    fmt = config.file_format
    files, accounting = [], []
    for day in range(config.days):
        stamp = (config.start + timedelta(days=day)).isoformat()
        con.execute(
            f"create or replace temp table day_rows as "
            f"select * exclude (file_day) from canonical where file_day = {day}"
        )
        n_rows = con.execute("select count(*) from day_rows").fetchone()[0]
        if fmt in ("csv", "parquet"):
            path = out / f"events_{stamp}.{fmt}"
            options = "header, delimiter ','" if fmt == "csv" else "format parquet"
            con.execute(
                "copy (select * exclude (sort_key, properties), "
                "to_json(properties)::varchar as properties from day_rows order by sort_key) "
                f"to '{path}' ({options})"
            )
            n_junk = 0
        else:
            junk = [
                j.replace("{k}", f"{config.seed}_{day}").replace("{ts}", f"{stamp}T12:00:00Z")
                for j in _JUNK
            ]
            n_junk = len(junk)
            fields = ", ".join(f"{c} := {c}" for c in _event_columns(con))
            body = (
                _SPEC_SQL.replace("from canonical", "from day_rows")
                if fmt == "segment"
                else f"select to_json(struct_pack({fields}))::varchar as line, sort_key "
                "from day_rows"
            )
            keys = (day * 86400 + rng.uniform(0, 86400, n_junk)).tolist()
            lines = con.execute(
                f"select line from ({body} union all "
                "select unnest($junk) as line, unnest($keys) as sort_key) order by sort_key",
                {"junk": junk, "keys": keys},
            ).fetch_record_batch(LINES_PER_BATCH)
            suffix = ".jsonl" if fmt == "jsonl" else ".jsonl.gz"
            path = out / f"events_{stamp}{suffix}"
            _write_lines(path, lines)
        files.append(path)
        accounting.append(
            {"file_name": path.name, "rows_read": n_rows + n_junk, "rows_quarantined": n_junk}
        )
    return files, pd.DataFrame(accounting)
