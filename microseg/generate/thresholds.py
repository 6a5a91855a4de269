"""Sessions planted half a unit inside or outside each threshold of the default segments and
triggers (segments.yml, triggers.yml), so that a test comparing memberships with the truth fails
when any threshold moves by one unit. A random stream of their own decides which sessions get
one (moving sessions renumbers them, so later draws fall elsewhere: a data set with the plants
is not the one without them plus the plants). Where they can, they move times, not behavior:
a page left open (a long pause before the next page, no engaged time), a late checkout, a
session moved to another hour, so that the archetypes stay what they are. visits.py and
events.py apply them; truth.py measures what every session became, with the thresholds below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from microseg.generate.world import PT, SLOT_HOURS, SLOTS_PER_DAY, GeneratorConfig

NEAR_STREAM = 20  # the generator's random streams: 13 planted effects, 14 slow checkouts
NEAR_SHARE = 0.3  # of the sessions, which get the plants below
# of the bounces, which end next to 10 s: of people who only ever bounce (low_engagement's
# members, whose verdict it decides), and of everyone else (a bounce is what the bouncer
# archetype is recognized by: a few only)
LINGER_SHARE = {"only_bounces": 0.5, "others": 0.05}
MARGIN_S = 0.5  # how far inside or outside; timestamps keep milliseconds

PRODUCT_DWELL_S = 120  # product_hesitators: a product page without add_to_cart lasting > 120 s
ARTICLE_DWELL_S = 180  # deep_content_readers: an article read >= 180 s (scrolled, related click)
DEEP_SCROLL_PERCENT = 90  # deep_content_readers: scrolled to >= 90 %
ARTICLE_WINDOW_S = 600  # subscribe_curious_readers: 3 article page views within 10 minutes
ARTICLES_IN_WINDOW = 3
SUBSCRIBE_HOVERS = 2  # subscribe_curious_readers: 2 hovers on cta_subscribe
CHECKOUT_WAIT_S = 15 * 60  # cart_abandoners, cart_abandoned: no checkout_start in 15 minutes
BOUNCE_S = 10  # low_engagement: a one-page session shorter than 10 s
RECENT_S = 3600  # recent_engagers: an event in the hour before the as-of time (midnight)
RECENT_MARGIN_S = 30  # minutes are the unit there
BUSY_SESSIONS = 4  # frequent_visitors: more than 3 sessions within 24 hours
BUSY_WINDOW_S = 24 * 3600


def _busy_day_across_midnight(s: pd.DataFrame, days: int) -> pd.DataFrame:
    """The last session of each day with 4 or more sessions moves to the next day, 24 h -+ 30 s
    after that day's first (alternately just within and just beyond the frequent_visitors
    window), where that two-hour slot of the next day is free. Sessions stay in time order."""
    slot = (s.start_s.to_numpy() % 86400) // (SLOT_HOURS * 3600)
    per_day = s.groupby(["person", "day"])
    first_start = per_day.start_s.transform("min").to_numpy()
    first_slot = (first_start % 86400) // (SLOT_HOURS * 3600)
    last = ~s.duplicated(["person", "day"], keep="last").to_numpy()
    busy = per_day.session.transform("size").to_numpy() >= BUSY_SESSIONS
    # the day's last slot is the recent_engagers plant's
    moving = np.flatnonzero(
        last & busy & (s.day.to_numpy() < days - 1) & (first_slot < SLOTS_PER_DAY - 1)
    )
    taken = set(zip(s.person, s.day, slot, strict=True))
    person, day = s.person.to_numpy(), s.day.to_numpy()
    moving = [i for i in moving if (person[i], day[i] + 1, first_slot[i]) not in taken]
    within = np.arange(len(moving)) % 2 == 0
    s.loc[moving, "start_s"] = (
        first_start[moving] + BUSY_WINDOW_S + np.where(within, -RECENT_MARGIN_S, RECENT_MARGIN_S)
    )
    s.loc[moving, "day"] = day[moving] + 1
    s = s.sort_values(["person", "start_s"], ignore_index=True)
    s["session"] = np.arange(len(s))
    return s


def mark_near_threshold_sessions(s: pd.DataFrame, config: GeneratorConfig) -> pd.DataFrame:
    """The sessions with the columns saying whose blocks sit next to a threshold, and on which
    side (`near_inside`: the session meets that threshold). Bounces of a day's last slot all
    move next to the recent_engagers hour (a night has few of them), and busy days' last
    sessions next to the frequent_visitors window: their starts, here."""
    rng = np.random.default_rng([config.seed, NEAR_STREAM])
    n = len(s)
    near, inside, scroll, late_s, lingers = (
        rng.random(n) < NEAR_SHARE,
        rng.random(n) < 0.5,
        rng.random(n) < 0.5,
        rng.uniform(CHECKOUT_WAIT_S + 1, CHECKOUT_WAIT_S + 55, n),
        rng.random(n),
    )
    s["near"] = near
    s["near_inside"] = inside
    # the read article is one scroll mark short (the marks are 25/50/75/100 %) instead
    s["near_scroll"] = near & ~inside & scroll
    slot = (s.start_s.to_numpy() % 86400) // (SLOT_HOURS * 3600)
    recent = s.bounce.to_numpy() & (slot == SLOTS_PER_DAY - 1)
    last_hour = s.day.to_numpy() * 86400 + 86400 - RECENT_S
    s["start_s"] = np.where(
        recent, last_hour + np.where(inside, RECENT_MARGIN_S, -RECENT_MARGIN_S), s.start_s
    )
    # a one-page session whose last event (a scroll) comes just before or after 10 s
    only_bounces = s.groupby("person").bounce.transform("all").to_numpy()
    share = np.where(only_bounces, LINGER_SHARE["only_bounces"], LINGER_SHARE["others"])
    linger = s.bounce.to_numpy() & (lingers < share) & ~recent
    s["bounce_linger_s"] = np.where(linger, BOUNCE_S + np.where(inside, -MARGIN_S, MARGIN_S), 0.0)
    # a purchase whose checkout starts just over 15 minutes after the cart add (an abandoned
    # cart by the rule); the slow checkouts are the ones just under
    late = s.purchase.to_numpy() & near & inside & ~s.slow_checkout.to_numpy()
    s["checkout_delay_s"] = np.where(late, late_s, s.checkout_delay_s)
    s["late_checkout"] = late  # the experiments' plants count these carts as abandoned
    return _busy_day_across_midnight(s, config.days)


def near_threshold_timing(
    p: pd.DataFrame, s: pd.DataFrame, gap: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(gap, read) of each page: the pause before the next page (the measured dwell is the
    time open plus it) and whether it is a near-threshold article read (events.py gives it a
    related-article click, visits.py its scroll). In the near sessions the first ordinary
    product page and article with another page after them are left open next to the product
    and article dwell thresholds, and the second of three subscribe articles until the third
    opens next to 10 minutes after the first."""
    gap = gap.copy()
    dwell = p.dwell.to_numpy()
    session = p.session.to_numpy()
    role = p.role.to_numpy()
    near = s.near.to_numpy()[session]
    side = np.where(s.near_inside.to_numpy()[session], MARGIN_S, -MARGIN_S)
    followed = np.append(session[1:] == session[:-1], False)
    ordinary = near & (role == "base") & followed  # no add_to_cart on these, dwell <= 150 s

    def first_of_session(mask: np.ndarray) -> np.ndarray:
        return mask & (pd.Series(mask.astype(int)).groupby(session).cumsum().to_numpy() == 1)

    product = first_of_session(ordinary & (p.page_type.to_numpy() == PT["product"]))
    gap[product] = PRODUCT_DWELL_S + side[product] - dwell[product]
    read = first_of_session(ordinary & (p.page_type.to_numpy() == PT["article"]))
    short_scroll = s.near_scroll.to_numpy()[session]
    gap[read] = ARTICLE_DWELL_S + np.where(short_scroll, 30, side)[read] - dwell[read]
    middle = np.flatnonzero(near & (role == "subscribe") & (p.order.to_numpy() == 1))
    first = middle - 1
    gap[middle] = ARTICLE_WINDOW_S - side[middle] - (dwell[first] + gap[first]) - dwell[middle]
    return gap, read
