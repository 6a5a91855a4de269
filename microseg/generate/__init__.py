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
Ground truth (never read by the pipeline) goes to OUT/ground_truth/: people.parquet,
sessions.parquet (with whether each session meets each rule, measured on its events),
files.csv (exact expected row accounting per file) and experiment_effects.parquet (the planted
purchases and lost carts).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from microseg.errors import InputError
from microseg.generate.delivery import draw_deliveries
from microseg.generate.events import draw_events
from microseg.generate.experiments import plant_effects
from microseg.generate.files import coded_frame, write_files
from microseg.generate.items import assign_items, write_catalog_truth
from microseg.generate.population import draw_devices, draw_people
from microseg.generate.truth import person_keys, write_truth
from microseg.generate.visits import draw_page_views, draw_sessions
from microseg.generate.world import EVENT_TYPES, PAGE_TYPES, GenerationSummary, GeneratorConfig

__all__ = ["EVENT_TYPES", "PAGE_TYPES", "GenerationSummary", "GeneratorConfig", "generate"]


def generate(config: GeneratorConfig, out: Path) -> GenerationSummary:
    """Write one dump file per received day under `out`, and ground truth beside them."""
    if config.file_format not in ("jsonl.gz", "jsonl", "csv", "parquet", "segment"):
        raise InputError(f"unknown format {config.file_format!r}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    people = draw_people(rng, config.users)
    devices, usage = draw_devices(rng, people)
    sessions = draw_sessions(rng, people, usage, devices, config)
    sessions, planted_effects = plant_effects(sessions, people, devices, config)
    pages = draw_page_views(rng, sessions)
    pages["content"], items, tastes = assign_items(config.seed, pages, sessions, people)
    events = draw_events(rng, pages, sessions)
    delivered = draw_deliveries(rng, events, sessions, config.days)
    coded = coded_frame(delivered, sessions, people, devices, rng)
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        con.register("events_coded", coded)
        files, accounting = write_files(con, config, out, rng)
    truth = out / "ground_truth"
    truth.mkdir(exist_ok=True)
    write_truth(truth, config, people, devices, sessions, events, delivered, accounting)
    write_catalog_truth(truth, items, tastes, person_keys(people))
    planted_effects.to_parquet(truth / "experiment_effects.parquet", index=False)
    return GenerationSummary(
        persons=len(people),
        sessions=len(sessions),
        events=len(delivered),
        files=files,
        ground_truth_dir=truth,
    )
