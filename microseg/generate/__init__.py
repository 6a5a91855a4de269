"""Synthetic behavioral events that look like a content + commerce site, with ground truth.

Vectorized throughout (NumPy arrays for structure, DuckDB for strings, JSON and files): no
Python loop runs per person, session or event; the loops below run per day or per block kind.

How it is built, top down:
- people with a latent archetype (deal seeker, browser, loyal customer, researcher, bouncer)
  and a latent purchase propensity; bots; devices (multi-device people, shared household
  devices);
- sessions in two-hour slots (start within the first 20 minutes, at most ~55 minutes long), so
  sessions of one person are always more than 30 minutes apart: the planted sessions are exactly
  what a 30-minute-timeout sessionization must find;
- page views built from blocks; some blocks plant behaviors that segment rules look for, and the
  other blocks are bounded so that they do not satisfy those rules by accident:
    subscribe_curious  3 articles within 10 minutes + 2-3 hovers on cta_subscribe
                       (unplanted sessions hover cta_subscribe at most once)
    deep_read          an article read 200-400 s, scrolled to 100 %, then a related_article click
                       (unplanted article dwell is at most 150 s)
    product_hesitation a product page dwell of 150-400 s without add_to_cart
                       (unplanted product dwell is at most 90 s)
    cart_abandon       add_to_cart and no checkout in the session (the next session is > 30 min
                       later); unplanted cart adds go to checkout within 2 minutes
    bounce             a session of a single page_view (unplanted sessions last >= 12 s)
  and, from a random stream of their own (thresholds.py), some of those blocks move to half a
  unit inside or outside each rule's threshold (a product page open 120 +- 0.5 s, a third
  article 600 -+ 0.5 s after the first, checkouts 14-16 minutes after the cart, a one-page
  session 10 +- 0.5 s long, the day's last bounces 60 min +- 30 s before midnight), so that
  moving any threshold by one unit changes some session's verdict;
- the events of each page view, identify events when a registered person logs in on a device
  (mid-session: earlier events of that session are anonymous), consent grants and opt-outs;
- delivery mess: late sessions (received days later), duplicate deliveries, out-of-order lines,
  malformed lines, missing ids, unknown event types.
- optionally, planted true effects of experiments on cart_abandoned (experiments.py): some
  people of a treatment arm buy in a later session after their abandoned cart (a lift), or
  their carts are never tracked (a sample ratio mismatch).
Big populations are drawn in cohorts of people, one after the other, each with a random
stream of its own (the first's is the seed's: a population of one cohort is what it always
was); their events are staged in a DuckDB file on disk and the day files written from there,
so memory holds one cohort whatever the size (COHORT_PERSON_DAYS).
Ground truth (never read by the pipeline) goes to OUT/ground_truth/: people.parquet,
sessions.parquet (with whether each session meets each rule, measured on its events),
files.csv (exact expected row accounting per file) and experiment_effects.parquet (the planted
purchases and lost carts).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from microseg.errors import InputError
from microseg.generate.delivery import draw_deliveries
from microseg.generate.events import draw_events
from microseg.generate.experiments import plant_effects
from microseg.generate.files import coded_frame, stage_events, write_files
from microseg.generate.items import assign_items, write_catalog_truth, write_tastes
from microseg.generate.population import draw_devices, draw_people
from microseg.generate.truth import (
    duplicates_per_day,
    person_keys,
    write_accounting,
    write_truth,
)
from microseg.generate.visits import draw_page_views, draw_sessions
from microseg.generate.world import EVENT_TYPES, PAGE_TYPES, GenerationSummary, GeneratorConfig

__all__ = ["EVENT_TYPES", "PAGE_TYPES", "GenerationSummary", "GeneratorConfig", "generate"]

# People x days drawn at once: the peak stays under 2 GiB (1.7 GiB for the demo's 1,500 x 42,
# one cohort; 1.9 GiB for 12,000 x 32 in six)
COHORT_PERSON_DAYS = 64_000
# What DuckDB may hold of the staged events before it spills to the staging folder
STAGING_MEMORY = "512MB"


def cohorts(config: GeneratorConfig) -> list[GeneratorConfig]:
    """The population split into cohorts of at most COHORT_PERSON_DAYS person-days, each a
    config of its own: its share of the users and its own seed (the first keeps the seed)."""
    n = max(1, -(-config.users * config.days // COHORT_PERSON_DAYS))
    sizes = np.diff(np.linspace(0, config.users, n + 1).round().astype(int))
    seeds = [config.seed] + [
        int(np.random.SeedSequence([config.seed, k]).generate_state(1)[0]) for k in range(1, n)
    ]
    return [
        dataclasses.replace(config, users=int(size), seed=seed)
        for size, seed in zip(sizes, seeds, strict=True)
    ]


def generate(config: GeneratorConfig, out: Path) -> GenerationSummary:
    """Write one dump file per received day under `out`, and ground truth beside them."""
    if config.file_format not in ("jsonl.gz", "jsonl", "csv", "parquet", "segment"):
        raise InputError(f"unknown format {config.file_format!r}")
    out.mkdir(parents=True, exist_ok=True)
    truth = out / "ground_truth"
    truth.mkdir(exist_ok=True)
    parts = cohorts(config)
    with (
        tempfile.TemporaryDirectory(prefix=".generating-", dir=out) as staging,
        duckdb.connect(str(Path(staging) / "events.duckdb")) as con,
    ):
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"set memory_limit = '{STAGING_MEMORY}'")
        con.execute(f"set temp_directory = '{Path(staging) / 'spill'}'")
        folders = (
            [truth]
            if len(parts) == 1
            else [Path(staging) / f"truth_{k}" for k in range(len(parts))]
        )
        drawn: list[_Drawn] = []
        for cohort, folder in zip(parts, folders, strict=True):
            folder.mkdir(exist_ok=True)
            persons = sum(d.persons for d in drawn)
            sessions = sum(d.sessions for d in drawn)
            drawn.append(_generate_cohort(cohort, config.seed, persons, sessions, con, folder))
        if len(parts) > 1:
            _merge_truth(folders, truth)
        # the junk lines' places come from the first cohort's stream
        files, accounting = write_files(con, config, out, drawn[0].rng)
        events = con.execute("select count(*) from canonical").fetchone()[0]
    write_accounting(truth, accounting, sum(d.duplicates for d in drawn))
    write_catalog_truth(truth, drawn[0].items)  # the same catalog for every cohort
    return GenerationSummary(
        persons=sum(d.persons for d in drawn),
        sessions=sum(d.sessions for d in drawn),
        events=events,
        files=files,
        ground_truth_dir=truth,
    )


class _Drawn(NamedTuple):
    rng: np.random.Generator  # as the cohort left it
    persons: int
    sessions: int
    duplicates: np.ndarray  # duplicate deliveries per day
    items: pd.DataFrame  # the catalog


def _generate_cohort(
    config: GeneratorConfig,
    catalog_seed: int,
    first_person: int,
    first_session: int,
    con: duckdb.DuckDBPyConnection,
    truth: Path,
) -> _Drawn:
    """Draw one cohort, stage its events in `con` and write its ground truth to `truth`."""
    rng = np.random.default_rng(config.seed)
    people = draw_people(rng, config.users, first_person)
    devices, usage = draw_devices(rng, people)
    sessions = draw_sessions(rng, people, usage, devices, config)
    sessions, planted_effects = plant_effects(sessions, people, devices, config)
    pages = draw_page_views(rng, sessions)
    pages["content"], items, tastes = assign_items(
        catalog_seed, config.seed, pages, sessions, people
    )
    events = draw_events(rng, pages, sessions)
    del pages
    delivered = draw_deliveries(rng, events, sessions, config.days)
    coded = coded_frame(delivered, sessions, people, devices, rng)
    duplicates = duplicates_per_day(delivered, config.days)
    del delivered
    write_truth(truth, config, people, devices, sessions, events, first_session)
    del events
    stage_events(con, coded, config)
    write_tastes(truth, tastes, person_keys(people))
    planted_effects[["cart_session", "converted_session"]] += first_session
    planted_effects.to_parquet(truth / "experiment_effects.parquet", index=False)
    return _Drawn(rng, len(people), len(sessions), duplicates, items)


def _merge_truth(folders: list[Path], truth: Path) -> None:
    """Each ground truth file of the cohorts' folders as one file, a row group per cohort."""
    for name in sorted(p.name for p in folders[0].glob("*.parquet")):
        paths = [folder / name for folder in folders]
        schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
        with pq.ParquetWriter(truth / name, schema) as writer:
            for path in paths:
                writer.write_table(pq.read_table(path).cast(schema))
