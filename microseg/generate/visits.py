"""Sessions in two-hour slots and the page views they are built from (planted blocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from microseg.generate.thresholds import mark_near_threshold_sessions, near_threshold_timing
from microseg.generate.world import (
    ARCHETYPES,
    BASE_PAGES_MEAN,
    BINGE_P,
    BOUNCE_P,
    CAMPAIGNS,
    DWELL_MEAN_S,
    PAGE_MIX,
    PLANT_P,
    PT,
    REFERRERS,
    SCROLL_DEPTH,
    SESSIONS_PER_DAY,
    SLOT_HOURS,
    SLOTS_PER_DAY,
    GeneratorConfig,
    binge_rate,
    pick,
)

# ------------------------------------------------------------------------------------ sessions


LAPSE_STREAM = 15  # the random stream of the lapse days: without lapses nothing else moves


def lapse_days(config: GeneratorConfig, archetypes: np.ndarray) -> np.ndarray:
    """The day (0 = the first) from which each person never visits again, `config.days` for
    none within the period: each day a person still visits, they lapse first with
    `config.lapse_hazard` (memoryless, the same for everyone; bots never). The churn
    churn_risk learns to see coming; ground truth: truth_people.lapse_date."""
    never = np.full(len(archetypes), config.days)
    if config.lapse_hazard == 0:
        return never
    rng = np.random.default_rng([config.seed, LAPSE_STREAM])
    lapse = np.minimum(rng.geometric(config.lapse_hazard, len(archetypes)) - 1, config.days)
    return np.where(archetypes == ARCHETYPES.index("bot"), never, lapse)


def draw_sessions(rng, people, usage, devices, config: GeneratorConfig) -> pd.DataFrame:
    n, days = len(people), config.days
    arch = people.archetype.to_numpy()
    rate = np.repeat(SESSIONS_PER_DAY[arch], days).reshape(n, days)
    binge = rng.random((n, days)) < BINGE_P
    rate = np.where(binge, binge_rate(rate), rate)
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
    # near-threshold decoys for the cart trigger: checkout 14-14.9 minutes after the cart add
    # (drawn from their own stream, so the rest of the data set stays as it was)
    decoys = np.random.default_rng([config.seed, 14])
    s["slow_checkout"] = s.purchase & (decoys.random(len(s)) < 0.1)
    s["checkout_delay_s"] = decoys.uniform(14 * 60, 14 * 60 + 55, len(s))
    s = mark_near_threshold_sessions(s, config)  # may move sessions: new order and numbers
    # lapsed people's sessions go last, after the moves: none on or after the lapse day
    visiting = s.day.to_numpy() < lapse_days(config, arch)[s.person.to_numpy()]
    s = s[visiting].reset_index(drop=True).assign(session=lambda kept: np.arange(len(kept)))
    live = ~s.bounce & ~s.is_bot
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


def draw_page_views(rng, s: pd.DataFrame) -> pd.DataFrame:
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
            "page_type": pick(rng, PAGE_MIX[a[base_idx]]),
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
            "page_type": pick(rng, PAGE_MIX[np.full(len(bot_idx), 5)]),
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
    p.loc[unset, "page_type"] = pick(rng, PAGE_MIX[a[p.session[unset]]])
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
    gap, p["near_read"] = near_threshold_timing(p, s, gap)
    step = p.dwell.to_numpy() + gap
    csum = np.cumsum(step)
    first = ~p.session.duplicated().to_numpy()
    session_base = np.maximum.accumulate(np.where(first, csum - step, 0))
    p["t0"] = s.start_s.to_numpy()[p.session] + (csum - step - session_base)
    # slow (and late) checkouts: the checkout page (right after the cart page) starts later, so
    # that checkout_start (t0 + 1) comes checkout_delay_s after the add_to_cart (cart t0 + 0.7
    # dwell + 1)
    delayed = (s.slow_checkout | s.late_checkout).to_numpy()
    slow = np.flatnonzero((role == "checkout") & delayed[p.session])
    t0 = p.t0.to_numpy().copy()
    added_at = t0[slow - 1] + p.dwell.to_numpy()[slow - 1] * 0.7 + 1
    t0[slow] = added_at + s.checkout_delay_s.to_numpy()[p.session.to_numpy()[slow]] - 1
    p["t0"] = t0
    p["position"] = p.groupby("session").cumcount()
    depth = np.clip(rng.beta(2, 2, len(p)) * 2 * SCROLL_DEPTH[pa_], 0, 1) * 100
    short_scroll = s.near_scroll.to_numpy()[p.session]
    p["scroll_depth"] = np.select(
        [role == "deep", p.near_read.to_numpy(), np.isin(role, ["bounce", "bot"])],
        [100, np.where(short_scroll, 75, 100), 0],
        depth,
    )
    p["content"] = rng.integers(1, 400, len(p))
    p["page"] = np.arange(len(p))
    return p
