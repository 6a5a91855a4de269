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
  other blocks are bounded so that they can never satisfy those rules by accident:
    subscribe_curious  3 articles within 10 minutes + 2-3 hovers on cta_subscribe
                       (unplanted sessions hover cta_subscribe at most once)
    deep_read          an article read 200-400 s, scrolled to 100 %, then a related_article click
                       (unplanted article dwell is at most 150 s)
    product_hesitation a product page dwell of 150-400 s without add_to_cart
                       (unplanted product dwell is at most 90 s)
    cart_abandon       add_to_cart and no checkout in the session (the next session is > 30 min
                       later); unplanted cart adds go to checkout within 2 minutes
    bounce             a session of a single page_view (unplanted sessions last >= 12 s)
- the events of each page view, identify events when a registered person logs in on a device
  (mid-session: earlier events of that session are anonymous), consent grants and opt-outs;
- delivery mess: late sessions (received days later), duplicate deliveries, out-of-order lines,
  malformed lines, missing ids, unknown event types.
Ground truth (never read by the pipeline) goes to OUT/ground_truth/: people.parquet,
sessions.parquet and files.csv (exact expected row accounting per file).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from microseg.errors import InputError

ARCHETYPES = ("deal_seeker", "browser", "loyal_customer", "researcher", "bouncer", "bot")
HUMAN_SHARE = np.array([0.22, 0.28, 0.15, 0.20, 0.15])
PAGE_TYPES = ("home", "article", "product", "category", "checkout", "search", "video", "other")
CATEGORIES = ("news", "sports", "tech", "fashion", "home_garden", "travel", "food", "finance")
COUNTRIES = ("US", "DE", "FR", "GB", "NL", "ES", "IT", "BR", "IN")
COUNTRY_SHARE = np.array([0.3, 0.15, 0.1, 0.12, 0.06, 0.08, 0.07, 0.06, 0.06])
DEVICE_TYPES = ("mobile", "desktop", "tablet")
REFERRERS = (
    "",
    "https://www.google.com/",
    "https://www.facebook.com/",
    "https://news.ycombinator.com/",
    "https://t.co/",
)
CAMPAIGNS = ("", "autumn_sale", "newsletter_weekly", "retargeting")
SEARCH_WORDS = np.array(
    (
        "cheap running shoes wireless headphones best laptop 2026 review recipe vegan pasta "
        "travel deals lisbon winter jacket sale stock market news football results smart watch "
        "garden tools how to budget"
    ).split()
)
EVENT_TYPES = (
    "page_view",
    "page_ping",
    "scroll",
    "click",
    "hover",
    "video_play",
    "video_pause",
    "video_progress",
    "video_complete",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "form_submit",
    "identify",
    "consent",
)
EV = {name: i for i, name in enumerate(EVENT_TYPES)}
PT = {name: i for i, name in enumerate(PAGE_TYPES)}
ELEMENTS = (
    "",
    "cta_subscribe",
    "related_article",
    "share_button",
    "author_bio",
    "product_image",
    "cta_add_to_cart",
    "reviews",
    "nav_menu",
    "hero_banner",
    "filter_price",
    "product_tile",
    "video_player",
    "search_result",
    "cta_pay",
)
EL = {name: i for i, name in enumerate(ELEMENTS)}
# Generic hover/click targets by page type (never cta_subscribe: that one is planted).
PAGE_ELEMENTS = {
    "home": ("nav_menu", "hero_banner"),
    "article": ("related_article", "share_button", "author_bio"),
    "product": ("product_image", "reviews"),
    "category": ("filter_price", "product_tile"),
    "checkout": ("cta_pay",),
    "search": ("search_result",),
    "video": ("video_player",),
    "other": ("nav_menu",),
}

# Per-archetype behavior (rows follow ARCHETYPES; the bot row is used only where noted).
SESSIONS_PER_DAY = np.array([0.55, 0.45, 0.8, 0.6, 0.3, 1.0])
BASE_PAGES_MEAN = np.array([4.0, 3.5, 4.5, 3.5, 1.5, 0.0])
DWELL_MEAN_S = np.array([35.0, 40.0, 55.0, 80.0, 15.0, 2.0])
SCROLL_DEPTH = np.array([0.45, 0.4, 0.6, 0.8, 0.2, 0.0])
BOUNCE_P = np.array([0.08, 0.12, 0.04, 0.06, 0.65, 0.0])
REGISTERED_P = np.array([0.6, 0.35, 0.95, 0.5, 0.1, 0.0])
PROPENSITY_LOGIT = np.array([-1.2, -3.0, 0.2, -2.2, -4.5, -9.0])
PLANT_P = {  # per-session probability of each planted behavior block
    "subscribe_curious": np.array([0.01, 0.06, 0.06, 0.18, 0.0, 0.0]),
    "deep_read": np.array([0.01, 0.05, 0.1, 0.2, 0.0, 0.0]),
    "product_hesitation": np.array([0.15, 0.07, 0.08, 0.04, 0.0, 0.0]),
}
PAGE_MIX = np.array(
    [  # home article product category checkout search video other
        [0.06, 0.10, 0.44, 0.26, 0.0, 0.10, 0.03, 0.01],
        [0.12, 0.36, 0.12, 0.14, 0.0, 0.05, 0.19, 0.02],
        [0.10, 0.20, 0.34, 0.16, 0.0, 0.10, 0.08, 0.02],
        [0.05, 0.56, 0.08, 0.05, 0.0, 0.20, 0.05, 0.01],
        [0.30, 0.40, 0.20, 0.00, 0.0, 0.00, 0.10, 0.00],
        [0.10, 0.30, 0.40, 0.20, 0.0, 0.00, 0.00, 0.00],
    ]
)
PLACEHOLDER_USER_IDS = ("null", "undefined", "anonymous", "0", "-1")
SLOT_HOURS = 2
SLOTS_PER_DAY = 24 // SLOT_HOURS


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 1000
    days: int = 14
    start: date = date(2026, 10, 1)
    seed: int = 7
    file_format: str = "jsonl.gz"  # jsonl.gz | jsonl | csv | parquet | segment


@dataclass(frozen=True)
class GenerationSummary:
    persons: int
    sessions: int
    events: int
    files: list[Path]
    ground_truth_dir: Path


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (rows sum to 1), vectorized."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return (u > cum).sum(axis=1)


# -------------------------------------------------------------------------------------- people


def _people(rng: np.random.Generator, users: int) -> pd.DataFrame:
    n_bots = max(1, users // 200)
    archetype = np.concatenate(
        [rng.choice(5, size=users, p=HUMAN_SHARE), np.full(n_bots, ARCHETYPES.index("bot"))]
    )
    n = len(archetype)
    logit = PROPENSITY_LOGIT[archetype] + rng.normal(0, 0.9, n)
    propensity = 1 / (1 + np.exp(-logit))
    registered = rng.random(n) < REGISTERED_P[archetype]
    affinity = rng.dirichlet(np.full(len(CATEGORIES), 0.6), size=n)
    opt_out = (rng.random(n) < 0.05) & (archetype != ARCHETYPES.index("bot"))
    return pd.DataFrame(
        {
            "person": np.arange(n),
            "archetype": archetype,
            "propensity": propensity,
            "registered": registered,
            "country": rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE),
            "favorite_category": affinity.argmax(axis=1),
            "affinity": list(affinity),
            "opt_out": opt_out,
            "regrant": opt_out & (rng.random(n) < 0.2),
        }
    )


def _devices(rng: np.random.Generator, people: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Devices and who uses them. Registered people have 1-3 devices; 3% share one at home."""
    n_own = np.where(people.registered, 1 + rng.binomial(2, 0.35, len(people)), 1)
    owner = np.repeat(people.person.to_numpy(), n_own)
    devices = pd.DataFrame(
        {
            "device": np.arange(len(owner)),
            "owner": owner,
            "device_type": rng.choice(3, size=len(owner), p=[0.55, 0.35, 0.10]),
        }
    )
    usage = devices.rename(columns={"owner": "person"})[["device", "person"]]
    registered = people.person[people.registered & (people.archetype != 5)].to_numpy()
    sharers = rng.permutation(registered)[: 2 * int(len(registered) * 0.015)].reshape(-1, 2)
    first_device = devices.groupby("owner").device.min()
    shared = pd.DataFrame(
        {"device": first_device.loc[sharers[:, 0]].to_numpy(), "person": sharers[:, 1]}
    )
    usage = pd.concat([usage, shared], ignore_index=True)
    devices["shared"] = devices.device.isin(shared.device)
    return devices, usage.sort_values(["person", "device"], ignore_index=True)


# ------------------------------------------------------------------------------------ sessions


def _sessions(rng, people, usage, devices, config: GeneratorConfig) -> pd.DataFrame:
    n, days = len(people), config.days
    arch = people.archetype.to_numpy()
    rate = np.repeat(SESSIONS_PER_DAY[arch], days).reshape(n, days)
    binge = rng.random((n, days)) < 0.03
    rate = np.where(binge, rate * 5 + 1, rate)
    k = np.minimum(rng.poisson(rate), SLOTS_PER_DAY)
    k[arch == 5] = 1  # bots crawl once a day
    ranks = np.argsort(np.argsort(rng.random((n * days, SLOTS_PER_DAY)), axis=1), axis=1)
    take = ranks < k.reshape(-1, 1)
    pd_idx, slot = np.nonzero(take)
    person, day = pd_idx // days, pd_idx % days
    start_s = day * 86400 + slot * SLOT_HOURS * 3600 + 3600 + rng.uniform(0, 1200, len(slot))
    s = pd.DataFrame({"person": person, "day": day, "start_s": start_s})
    s = s.sort_values(["person", "start_s"], ignore_index=True)
    # pick a device among those the person uses
    counts = usage.groupby("person").size().reindex(people.person, fill_value=0).to_numpy()
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pick = offsets[s.person] + (rng.random(len(s)) * counts[s.person]).astype(int)
    s["device"] = usage.device.to_numpy()[pick]
    s["archetype"] = arch[s.person]
    s["session"] = np.arange(len(s))
    registered = people.registered.to_numpy()[s.person]
    shared = devices.shared.to_numpy()[s.device]
    # a registered person logs in on each own device: 60% in the first session there, the
    # others a session or two later (browsing anonymously until then, stitched afterwards)
    nth_on_device = s.groupby(["person", "device"]).cumcount().to_numpy()
    sessions_on_device = s.groupby(["person", "device"]).session.transform("size").to_numpy()
    later = 1 + (rng.random(len(s)) < 0.5)
    login_at = np.where(rng.random(len(s)) < 0.6, 0, np.minimum(later, sessions_on_device - 1))
    login_at = pd.Series(login_at).groupby([s.person, s.device]).transform("first").to_numpy()
    s["login_session"] = registered & ~shared & (nth_on_device == login_at)
    s["always_logged_in"] = registered & shared
    s["is_bot"] = s.archetype == 5
    a = s.archetype.to_numpy()
    s["bounce"] = (rng.random(len(s)) < BOUNCE_P[a]) & ~s.login_session
    live = ~s.bounce & ~s.is_bot
    for name, probs in PLANT_P.items():
        s[name] = live & (rng.random(len(s)) < probs[a])
    prop = people.propensity.to_numpy()[s.person]
    s["purchase"] = live & (rng.random(len(s)) < np.clip(prop * 1.3, 0, 0.95))
    s["cart_abandon"] = live & ~s.purchase & (rng.random(len(s)) < np.clip(prop * 0.8, 0.01, 0.5))
    s["casual_subscribe_hover"] = live & ~s.subscribe_curious & (rng.random(len(s)) < 0.12)
    s["newsletter_signup"] = live & (rng.random(len(s)) < 0.015)
    first_session = ~s.duplicated("person")
    s["consent_grant"] = first_session & ~s.is_bot
    # opt-out in a random later session, some re-grant after that
    opt_person = people.opt_out.to_numpy()[s.person]
    nth = s.groupby("person").cumcount().to_numpy()
    total = s.groupby("person").session.transform("size").to_numpy()
    # the opt-out happens in a later session (never the first), if the person has one
    opt_at = 1 + (s.person.to_numpy() * 7919 + config.seed) % np.maximum(total - 1, 1)
    s["consent_opt_out"] = opt_person & (nth == opt_at) & (total > 1)
    regrant = people.regrant.to_numpy()[s.person]
    s["consent_regrant"] = regrant & (nth == total - 1) & (nth > opt_at)
    s["late_days"] = np.where(rng.random(len(s)) < 0.02, rng.integers(1, 4, len(s)), 0)
    last_day = config.days - 1
    s.loc[s.day + s.late_days > last_day, "late_days"] = 0
    s["channel"] = rng.choice(len(REFERRERS), size=len(s), p=[0.4, 0.3, 0.15, 0.05, 0.1])
    s["campaign"] = np.where(rng.random(len(s)) < 0.2, rng.integers(1, len(CAMPAIGNS), len(s)), 0)
    return s


# ---------------------------------------------------------------------------------- page views


def _block(
    mask: np.ndarray,
    order: float,
    page_type: int,
    role: str,
    repeat: int = 1,
) -> pd.DataFrame:
    idx = np.repeat(np.flatnonzero(mask), repeat)
    return pd.DataFrame(
        {
            "session": idx,
            "order": order + np.tile(np.arange(repeat), mask.sum()),
            "page_type": page_type,
            "role": role,
        }
    )


def _page_views(rng, s: pd.DataFrame) -> pd.DataFrame:
    a = s.archetype.to_numpy()
    live = ~s.bounce.to_numpy() & ~s.is_bot.to_numpy()
    planted = (
        s.subscribe_curious * 3
        + s.deep_read * 2
        + s.product_hesitation
        + s.purchase * 2
        + s.cart_abandon
    ).to_numpy()
    n_base = np.where(live, np.minimum(rng.geometric(1 / (1 + BASE_PAGES_MEAN[a])) - 1, 8), 0)
    n_base = np.where(live, np.maximum(n_base, 2 - planted), n_base)
    base_idx = np.repeat(np.arange(len(s)), n_base)
    base = pd.DataFrame(
        {
            "session": base_idx,
            "order": 10 + pd.Series(base_idx).groupby(base_idx).cumcount().to_numpy(),
            "page_type": _pick(rng, PAGE_MIX[a[base_idx]]),
            "role": "base",
        }
    )
    bounce = s.bounce.to_numpy()
    bot = s.is_bot.to_numpy()
    n_bot_pages = np.where(bot, rng.integers(150, 300, len(s)), 0)
    bot_idx = np.repeat(np.arange(len(s)), n_bot_pages)
    bots = pd.DataFrame(
        {
            "session": bot_idx,
            "order": pd.Series(bot_idx).groupby(bot_idx).cumcount().to_numpy(),
            "page_type": _pick(rng, PAGE_MIX[np.full(len(bot_idx), 5)]),
            "role": "bot",
        }
    )
    blocks = [
        base,
        bots,
        _block(bounce, 0, -1, "bounce"),
        _block(s.subscribe_curious.to_numpy(), 0, PT["article"], "subscribe", 3),
        _block(s.deep_read.to_numpy(), 3, PT["article"], "deep"),
        _block(s.deep_read.to_numpy(), 4, PT["article"], "related"),
        _block(s.product_hesitation.to_numpy(), 5, PT["product"], "hesitate"),
        _block(s.purchase.to_numpy(), 90, PT["product"], "cart"),
        _block(s.purchase.to_numpy(), 91, PT["checkout"], "checkout"),
        _block(s.cart_abandon.to_numpy(), 90, PT["product"], "abandon"),
    ]
    p = pd.concat(blocks, ignore_index=True).sort_values(["session", "order"], ignore_index=True)
    unset = p.page_type.to_numpy() == -1  # bounce page: any landing type
    p.loc[unset, "page_type"] = _pick(rng, PAGE_MIX[a[p.session[unset]]])
    role = p.role.to_numpy()
    pt = p.page_type.to_numpy()
    pa_ = a[p.session]
    base_dwell = np.clip(rng.lognormal(np.log(DWELL_MEAN_S[pa_]), 0.6), 12, None)
    cap = np.select([pt == PT["article"], pt == PT["product"]], [150, 90], 120)
    dwell = np.minimum(base_dwell, cap)
    dwell = np.select(
        [
            role == "bounce",
            role == "bot",
            role == "subscribe",
            role == "deep",
            role == "hesitate",
            np.isin(role, ["cart", "abandon"]),
            role == "checkout",
        ],
        [
            0,
            rng.uniform(1, 3, len(p)),
            rng.uniform(60, 150, len(p)),
            rng.uniform(200, 400, len(p)),
            rng.uniform(150, 400, len(p)),
            rng.uniform(20, 90, len(p)),
            rng.uniform(30, 110, len(p)),
        ],
        dwell,
    )
    video = pt == PT["video"]
    p["video_duration"] = np.where(video, rng.integers(30, 180, len(p)), 0)
    watch_share = np.clip(rng.beta(2, 2, len(p)) * 1.4, 0, 1)
    watched = np.where(video, np.floor(p.video_duration * watch_share), 0)
    dwell = np.where(video & (role == "base"), np.clip(watched + 8, 12, 150), dwell)
    p["watched"] = np.minimum(watched, np.maximum(dwell - 6, 0))
    p["dwell"] = np.round(dwell, 3)
    gap = np.where(role == "bot", 0.0, rng.uniform(1, 3, len(p)))
    step = p.dwell.to_numpy() + gap
    csum = np.cumsum(step)
    first = ~p.session.duplicated().to_numpy()
    session_base = np.maximum.accumulate(np.where(first, csum - step, 0))
    p["t0"] = s.start_s.to_numpy()[p.session] + (csum - step - session_base)
    p["position"] = p.groupby("session").cumcount()
    depth = np.clip(rng.beta(2, 2, len(p)) * 2 * SCROLL_DEPTH[pa_], 0, 1) * 100
    p["scroll_depth"] = np.select(
        [role == "deep", np.isin(role, ["bounce", "bot"])], [100, 0], depth
    )
    p["content"] = rng.integers(1, 400, len(p))
    p["page"] = np.arange(len(p))
    return p


# -------------------------------------------------------------------------------------- events


def _events(rng, p: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
    """Every event of every page view, as integer/float columns (strings come later)."""
    parts: list[pd.DataFrame] = []

    def emit(page_idx: np.ndarray, event: int, t: np.ndarray, **cols) -> None:
        frame = pd.DataFrame({"page": page_idx, "event": event, "t": t})
        for key, value in cols.items():
            frame[key] = value
        parts.append(frame)

    pages = p.page.to_numpy()
    t0 = p.t0.to_numpy()
    dwell = p.dwell.to_numpy()
    role = p.role.to_numpy()
    pt = p.page_type.to_numpy()
    nonbot = role != "bot"
    live = nonbot & (role != "bounce")
    emit(pages, EV["page_view"], t0)
    # heartbeats every 10 s while the page is open (engaged time)
    n_ping = np.where(live, np.floor(dwell / 10).astype(int), 0)
    idx = np.repeat(pages, n_ping)
    k = pd.Series(idx).groupby(idx).cumcount().to_numpy() + 1
    emit(idx, EV["page_ping"], t0[idx] + 10 * k)
    # scroll depth marks at 25/50/75/100 %
    for mark in (25, 50, 75, 100):
        m = live & (p.scroll_depth.to_numpy() >= mark)
        emit(pages[m], EV["scroll"], t0[m] + dwell[m] * mark / 110, scroll_percent=float(mark))
    # generic hovers and clicks on the page's own elements (never cta_subscribe)
    n_hover = np.where(live, rng.poisson(0.7, len(p)), 0)
    idx = np.repeat(pages, n_hover)
    elements = np.array([EL[PAGE_ELEMENTS[PAGE_TYPES[t]][0]] for t in range(len(PAGE_TYPES))])
    alt = np.array([EL[PAGE_ELEMENTS[PAGE_TYPES[t]][-1]] for t in range(len(PAGE_TYPES))])
    el = np.where(rng.random(len(idx)) < 0.6, elements[pt[idx]], alt[pt[idx]])
    emit(
        idx,
        EV["hover"],
        t0[idx] + rng.uniform(0.5, 0.9, len(idx)) * dwell[idx],
        element=el,
        hover_ms=np.round(rng.lognormal(np.log(700), 0.7, len(idx))),
    )
    # planted: 2-3 hovers on cta_subscribe across the 3 subscribe articles
    sub = np.flatnonzero(role == "subscribe")
    sub = sub[rng.random(len(sub)) < 0.85]
    first_sub = np.flatnonzero((role == "subscribe") & (p.order.to_numpy() == 0))
    sub = np.union1d(sub, np.concatenate([first_sub, first_sub + 1]))  # at least 2 per session
    emit(
        pages[sub],
        EV["hover"],
        t0[sub] + dwell[sub] * 0.5,
        element=EL["cta_subscribe"],
        hover_ms=np.round(rng.uniform(400, 3000, len(sub))),
    )
    # casual: at most one cta_subscribe hover in an unplanted session, on its first page
    casual = s.casual_subscribe_hover.to_numpy()[p.session] & (p.position.to_numpy() == 0) & live
    emit(
        pages[casual],
        EV["hover"],
        t0[casual] + dwell[casual] * 0.3,
        element=EL["cta_subscribe"],
        hover_ms=np.round(rng.uniform(200, 1500, casual.sum())),
    )
    signup = s.newsletter_signup.to_numpy()[p.session] & (p.position.to_numpy() == 0) & live
    emit(pages[signup], EV["click"], t0[signup] + dwell[signup] * 0.6, element=EL["cta_subscribe"])
    emit(
        pages[signup],
        EV["form_submit"],
        t0[signup] + dwell[signup] * 0.6 + 4,
        element=EL["cta_subscribe"],
    )
    # related-article clicks: planted after a deep read, sometimes on ordinary articles
    related = (role == "deep") | (
        live & (pt == PT["article"]) & (role == "base") & (rng.random(len(p)) < 0.25)
    )
    emit(
        pages[related],
        EV["click"],
        t0[related] + dwell[related] - 0.5,
        element=EL["related_article"],
    )
    nav = live & (pt == PT["home"]) & (rng.random(len(p)) < 0.4)
    emit(pages[nav], EV["click"], t0[nav] + dwell[nav] * 0.8, element=EL["nav_menu"])
    # searches
    srch = live & (pt == PT["search"])
    emit(pages[srch], EV["search"], t0[srch] + 1.0, query=rng.integers(0, 10**6, srch.sum()))
    # video
    vid = live & (pt == PT["video"])
    dur = p.video_duration.to_numpy()
    watched = p.watched.to_numpy()
    emit(pages[vid], EV["video_play"], t0[vid] + 2, position_s=0.0, duration_s=dur[vid])
    for share in (0.25, 0.5, 0.75):
        m = vid & (watched >= dur * share)
        emit(
            pages[m],
            EV["video_progress"],
            t0[m] + 2 + dur[m] * share,
            position_s=np.floor(dur[m] * share),
            duration_s=dur[m],
        )
    done = vid & (watched >= dur)
    emit(
        pages[done],
        EV["video_complete"],
        t0[done] + 2 + dur[done],
        position_s=dur[done].astype(float),
        duration_s=dur[done],
    )
    paused = vid & ~done
    emit(
        pages[paused],
        EV["video_pause"],
        t0[paused] + 2 + watched[paused],
        position_s=watched[paused],
        duration_s=dur[paused],
    )
    # carts and checkout
    product = rng.integers(1, 500, len(p))
    price = np.round(rng.lognormal(np.log(35), 0.8, len(p)), 2)
    qty = rng.integers(1, 4, len(p))
    cart = np.isin(role, ["cart", "abandon"])
    emit(pages[cart], EV["click"], t0[cart] + dwell[cart] * 0.7, element=EL["cta_add_to_cart"])
    emit(
        pages[cart],
        EV["add_to_cart"],
        t0[cart] + dwell[cart] * 0.7 + 1,
        product=product[cart],
        price=price[cart],
        quantity=qty[cart],
    )
    checkout = role == "checkout"
    prev = np.flatnonzero(checkout) - 1  # the cart page right before checkout
    emit(pages[checkout], EV["checkout_start"], t0[checkout] + 1)
    emit(
        pages[checkout],
        EV["purchase"],
        t0[checkout] + dwell[checkout] - 1,
        product=product[prev],
        price=price[prev],
        quantity=qty[prev],
        revenue=np.round(price[prev] * qty[prev], 2),
    )
    ev = pd.concat(parts, ignore_index=True)
    page = ev.page.to_numpy()
    ev["session"] = p.session.to_numpy()[page]
    ev["page_type"] = pt[page]
    ev["content"] = p.content.to_numpy()[page]
    # product page views carry the product and its price (what a product-view tag sends)
    product_view = (pt[page] == PT["product"]) & (ev.event.to_numpy() == EV["page_view"])
    ev["product"] = np.where(product_view, product[page], ev["product"])
    ev["price"] = np.where(product_view, price[page], ev["price"])
    return _session_events(ev, p, s)


def _session_events(ev: pd.DataFrame, p: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
    """Identify and consent events, then who is logged in when."""
    sess = s.session.to_numpy()
    first_page = p.groupby("session").page.min()
    second_page = p.groupby("session").page.nth(1)
    second_page = pd.Series(second_page.to_numpy(), index=p.session.to_numpy()[second_page.index])
    extra = []
    login = np.flatnonzero(s.login_session.to_numpy())
    login_page = second_page.reindex(sess[login]).to_numpy()
    extra.append(
        pd.DataFrame(
            {
                "page": login_page,
                "event": EV["identify"],
                "t": p.t0.to_numpy()[login_page.astype(int)] - 1.0,
            }
        )
    )
    always = np.flatnonzero(
        s.always_logged_in.to_numpy() & ~s.duplicated(["person", "device"]).to_numpy()
    )
    fp = first_page.reindex(sess[always]).to_numpy()
    extra.append(
        pd.DataFrame({"page": fp, "event": EV["identify"], "t": p.t0.to_numpy()[fp] - 0.5})
    )
    for flag, granted in (("consent_grant", 1), ("consent_opt_out", 0), ("consent_regrant", 1)):
        rows = np.flatnonzero(s[flag].to_numpy())
        fp = first_page.reindex(sess[rows]).to_numpy()
        extra.append(
            pd.DataFrame(
                {
                    "page": fp,
                    "event": EV["consent"],
                    "t": p.t0.to_numpy()[fp] + 0.5 + granted * 0.1,
                    "consent": float(granted),
                }
            )
        )
    more = pd.concat(extra, ignore_index=True)
    more["session"] = p.session.to_numpy()[more.page]
    more["page_type"] = p.page_type.to_numpy()[more.page]
    more["content"] = p.content.to_numpy()[more.page]
    ev = pd.concat([ev, more], ignore_index=True)
    # logged in from the identify on that device (from the first event on shared devices)
    device = s.device.to_numpy()[ev.session]
    is_login = ev.event.to_numpy() == EV["identify"]
    login_t = pd.Series(ev.t.to_numpy()[is_login]).groupby(device[is_login]).min()
    start_t = login_t.reindex(device).to_numpy()
    ev["logged_in"] = ~np.isnan(start_t) & (ev.t.to_numpy() >= np.nan_to_num(start_t, nan=np.inf))
    ev["person"] = s.person.to_numpy()[ev.session]
    ev["device"] = device
    ev = ev.sort_values(["session", "t", "event"], kind="stable", ignore_index=True)
    ev["seq"] = np.arange(len(ev))
    return ev


# ------------------------------------------------------------------------------------ delivery


def _deliveries(rng, ev: pd.DataFrame, s: pd.DataFrame, days: int) -> pd.DataFrame:
    """Receive times (late sessions arrive days later) and duplicate deliveries.

    Nothing is received after the last day's file closes: every event lands in some file.
    """
    window_end = days * 86400 - 0.001
    late = s.late_days.to_numpy()[ev.session]
    received = (
        ev.t
        + rng.exponential(1.5, len(ev))
        + late * 86400
        + rng.uniform(0, 3600, len(ev)) * (late > 0)
    )
    ev["received_t"] = np.minimum(received, window_end)
    ev["duplicate_of"] = -1
    dup = ev.sample(frac=0.008, random_state=int(rng.integers(1 << 31)))
    retried = np.minimum(dup.received_t + rng.uniform(1, 90, len(dup)), window_end)
    dup = dup.assign(duplicate_of=dup.seq, received_t=retried)
    return pd.concat([ev, dup], ignore_index=True)


def _day_of(seconds: np.ndarray) -> np.ndarray:
    return (seconds // 86400).astype(int)


# ------------------------------------------------------------------------------------- writing

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
    'https://shop.example.com/' || page_type || '/' || content as page_url,
    page_type,
    case when page_type in ('article', 'video', 'product') then page_type || '_' || content end
        as content_id,
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
        struct_pack(k := 'purposes', v := case when consent is not null then json_object(
            'personalization', consent = 1, 'marketing', consent = 1, 'analytics', true) end)
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
        when 'form_submit' then 'Form Submitted' when 'consent' then 'Consent Updated'
        when 'page_view' then null when 'identify' then null else event_type end,
    'messageId', event_id, 'timestamp', event_at, 'receivedAt', received_at,
    'anonymousId', anonymous_id, 'userId', user_id,
    'properties', case when event_type <> 'identify' then json_merge_patch(
        coalesce(to_json(properties), '{{}}'),
        json_object('page_type', page_type, 'content_id', content_id,
                    'category', content_category, 'element_id', element_id)) end,
    'context', json_object(
        'page', json_object('url', page_url, 'referrer', referrer),
        'device', json_object('type', device_type),
        'location', json_object('country', country),
        'campaign', json_object('source', utm_source, 'medium', utm_medium, 'name', utm_campaign))
)::varchar as line, sort_key
from canonical
"""


def _coded_frame(
    ev: pd.DataFrame, s: pd.DataFrame, people: pd.DataFrame, devices: pd.DataFrame, rng
) -> pd.DataFrame:
    """Map integer codes to the strings the files carry (categorical lookups, vectorized)."""
    person = ev.person.to_numpy()
    session = ev.session.to_numpy()
    landing = ~pd.Series(session).duplicated().to_numpy()
    # one category per page (all events of a page agree): mostly the person's favorite
    cat_choice = people.favorite_category.to_numpy()[person]
    page = ev.page.to_numpy()
    page_cat = np.where((page * 2654435761) % 100 < 60, cat_choice, page % len(CATEGORIES))
    # a broken tracker sometimes sends placeholder user ids on anonymous events
    placeholder = np.where(
        ~ev.logged_in.to_numpy() & (rng.random(len(ev)) < 0.003),
        rng.integers(0, len(PLACEHOLDER_USER_IDS), len(ev)),
        -1,
    )
    words = SEARCH_WORDS
    q = ev.get("query")
    query = None
    if q is not None:
        qv = np.nan_to_num(q.to_numpy(), nan=-1).astype(np.int64)
        n_words = 1 + qv % 4
        w1, w2, w3, w4 = (words[(qv // 7**i) % len(words)] for i in range(1, 5))
        joined = np.char.add(np.char.add(np.char.add(w1, " "), w2), " ")
        query = np.select(
            [n_words == 1, n_words == 2, n_words == 3],
            [w1, np.char.add(np.char.add(w1, " "), w2), np.char.add(joined, w3)],
            np.char.add(np.char.add(joined, w3), np.char.add(" ", w4)),
        )
        query = np.where(qv < 0, None, query)

    def col(name):
        return ev[name].to_numpy() if name in ev else np.full(len(ev), np.nan)

    return pd.DataFrame(
        {
            "seq": ev.seq.to_numpy(),
            "event_type": np.array(EVENT_TYPES)[ev.event.to_numpy()],
            "t": ev.t.to_numpy(),
            "received_t": ev.received_t.to_numpy(),
            "device": ev.device.to_numpy(),
            "person": person,
            "logged_in": ev.logged_in.to_numpy(),
            "page_type": np.array(PAGE_TYPES)[ev.page_type.to_numpy()],
            "content": ev.content.to_numpy(),
            "content_category": np.array(CATEGORIES)[page_cat],
            "element": np.array(ELEMENTS)[np.nan_to_num(col("element"), nan=0).astype(int)],
            "device_type": np.array(DEVICE_TYPES)[
                devices.device_type.to_numpy()[ev.device.to_numpy()]
            ],
            "country": np.array(COUNTRIES)[people.country.to_numpy()[person]],
            "referrer": np.where(landing, np.array(REFERRERS)[s.channel.to_numpy()[session]], ""),
            "campaign": np.where(landing, np.array(CAMPAIGNS)[s.campaign.to_numpy()[session]], ""),
            "scroll_percent": col("scroll_percent"),
            "hover_ms": col("hover_ms"),
            "position_s": col("position_s"),
            "duration_s": col("duration_s"),
            "query": query if query is not None else np.full(len(ev), None),
            "product": col("product"),
            "price": col("price"),
            "quantity": col("quantity"),
            "revenue": col("revenue"),
            "consent": col("consent"),
            "placeholder_user_id": np.where(
                placeholder >= 0, np.array(PLACEHOLDER_USER_IDS)[placeholder], None
            ),
            "file_day": _day_of(ev.received_t.to_numpy()),
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


def _write_lines(path: Path, lines: pa.ChunkedArray) -> None:
    """Write strings as newline-terminated lines (gzip when the name says so), no row loop."""
    terminated = pc.binary_join_element_wise(lines, "", "\n").combine_chunks()
    terminated = terminated.cast(pa.large_string())
    offsets = np.frombuffer(terminated.buffers()[1], dtype=np.int64)
    first, last = offsets[terminated.offset], offsets[terminated.offset + len(terminated)]
    payload = memoryview(terminated.buffers()[2])[first:last] if last > first else b""
    if path.name.endswith(".gz"):
        with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _event_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = con.execute("select column_name from (describe day_rows)").fetchall()
    return [n for (n,) in names if n != "sort_key"]


def _write_files(con, config: GeneratorConfig, out: Path, rng) -> tuple[list[Path], pd.DataFrame]:
    """One file per received day; returns the files and their expected row accounting."""
    epoch = f"timestamp '{config.start.isoformat()} 00:00:00'"
    con.execute(
        "create or replace temp table canonical as "
        + _CANONICAL_SQL.format(seed=config.seed, epoch=epoch)
    )
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
            lines = (
                con.execute(
                    f"select line from ({body} union all "
                    "select unnest($junk) as line, unnest($keys) as sort_key) order by sort_key",
                    {"junk": junk, "keys": keys},
                )
                .to_arrow_table()
                .column("line")
            )
            suffix = ".jsonl" if fmt == "jsonl" else ".jsonl.gz"
            path = out / f"events_{stamp}{suffix}"
            _write_lines(path, lines)
        files.append(path)
        accounting.append(
            {"file_name": path.name, "rows_read": n_rows + n_junk, "rows_quarantined": n_junk}
        )
    return files, pd.DataFrame(accounting)


def _write_truth(
    truth: Path,
    config: GeneratorConfig,
    people: pd.DataFrame,
    devices: pd.DataFrame,
    sessions: pd.DataFrame,
    events: pd.DataFrame,
    delivered: pd.DataFrame,
    accounting: pd.DataFrame,
) -> None:
    """What the generator planted, for tests: people, sessions and per-file accounting."""
    epoch = pd.Timestamp(config.start)
    anon = pd.Series(
        [
            "anon_" + hashlib.md5(f"{config.seed}:device:{d}".encode()).hexdigest()[:20]
            for d in range(len(devices))
        ]
    )  # one per device, not per event
    # devices a person actually used (an owned device with no session never shows up)
    used = sessions[["person", "device"]].drop_duplicates().sort_values(["person", "device"])
    used = used.assign(anonymous_id=anon.to_numpy()[used.device])
    ids = used.groupby("person").anonymous_id.agg(list)
    users_per_device = used.groupby("device").person.nunique()
    shared_ids = anon[users_per_device.index[users_per_device >= 2]]
    # consent as the events say it (a planned opt-out needs a later session to happen in)
    opted_out = people.person.isin(sessions.person[sessions.consent_opt_out]).to_numpy()
    regranted = people.person.isin(sessions.person[sessions.consent_regrant]).to_numpy()
    people_out = pd.DataFrame(
        {
            "person_key": [f"p{p:07d}" for p in people.person],
            "user_id": np.where(people.registered, [f"user_{p:07d}" for p in people.person], None),
            "archetype": np.array(ARCHETYPES)[people.archetype],
            "true_purchase_propensity": people.propensity,
            "country": np.array(COUNTRIES)[people.country],
            "favorite_category": np.array(CATEGORIES)[people.favorite_category],
            "is_registered": people.registered,
            "is_bot": people.archetype == ARCHETYPES.index("bot"),
            "is_opted_out": opted_out & ~regranted,
            "ever_opted_out": opted_out,
            "anonymous_ids": ids.reindex(people.person).to_numpy(),
        }
    )
    span = events.groupby("session").t.agg(["min", "max", "size"])
    flags = [
        "bounce",
        "subscribe_curious",
        "deep_read",
        "product_hesitation",
        "cart_abandon",
        "purchase",
        "login_session",
        "is_bot",
    ]
    sessions_out = sessions[["session", "person", "device", "late_days", *flags]].copy()
    sessions_out["person_key"] = people_out.person_key.to_numpy()[sessions.person]
    sessions_out["anonymous_id"] = anon.to_numpy()[sessions.device]
    sessions_out["session_start_at"] = epoch + pd.to_timedelta(span["min"].to_numpy(), unit="s")
    sessions_out["session_end_at"] = epoch + pd.to_timedelta(span["max"].to_numpy(), unit="s")
    sessions_out["n_events"] = span["size"].to_numpy()
    dup_day = _day_of(delivered.received_t[delivered.duplicate_of >= 0].to_numpy())
    dups = pd.Series(dup_day).value_counts()
    accounting["rows_duplicate"] = dups.reindex(range(len(accounting)), fill_value=0).to_numpy()
    accounting["rows_loaded"] = (
        accounting.rows_read - accounting.rows_duplicate - accounting.rows_quarantined
    )
    people_out.to_parquet(truth / "people.parquet", index=False)
    sessions_out.drop(columns=["person", "device"]).to_parquet(
        truth / "sessions.parquet", index=False
    )
    pd.Series(shared_ids.to_numpy(), name="anonymous_id").to_frame().to_parquet(
        truth / "shared_devices.parquet", index=False
    )
    accounting.to_csv(truth / "files.csv", index=False)


def generate(config: GeneratorConfig, out: Path) -> GenerationSummary:
    """Write one dump file per received day under `out`, and ground truth beside them."""
    if config.file_format not in ("jsonl.gz", "jsonl", "csv", "parquet", "segment"):
        raise InputError(f"unknown format {config.file_format!r}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    people = _people(rng, config.users)
    devices, usage = _devices(rng, people)
    sessions = _sessions(rng, people, usage, devices, config)
    pages = _page_views(rng, sessions)
    events = _events(rng, pages, sessions)
    delivered = _deliveries(rng, events, sessions, config.days)
    coded = _coded_frame(delivered, sessions, people, devices, rng)
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        con.register("events_coded", coded)
        files, accounting = _write_files(con, config, out, rng)
    truth = out / "ground_truth"
    truth.mkdir(exist_ok=True)
    _write_truth(truth, config, people, devices, sessions, events, delivered, accounting)
    return GenerationSummary(
        persons=len(people),
        sessions=len(sessions),
        events=len(delivered),
        files=files,
        ground_truth_dir=truth,
    )
