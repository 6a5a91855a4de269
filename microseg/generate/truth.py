"""Ground truth beside the dumps (never read by the pipeline): people, sessions, files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from microseg.generate.delivery import day_of
from microseg.generate.experiments import anonymous_id, user_id
from microseg.generate.population import declines_marketing
from microseg.generate.thresholds import (
    ARTICLE_DWELL_S,
    ARTICLE_WINDOW_S,
    ARTICLES_IN_WINDOW,
    BOUNCE_S,
    CHECKOUT_WAIT_S,
    DEEP_SCROLL_PERCENT,
    PRODUCT_DWELL_S,
    SUBSCRIBE_HOVERS,
)
from microseg.generate.visits import lapse_days
from microseg.generate.world import (
    ARCHETYPES,
    BINGE_P,
    CATEGORIES,
    COUNTRIES,
    EL,
    EV,
    PT,
    SESSIONS_PER_DAY,
    GeneratorConfig,
    binge_rate,
)

# The moments triggers.yml's triggers fire at, re-derived from the generated events (never from
# the pipeline): (trigger, threshold). The decoys are the near misses: the closest cases that
# must not fire.
ARTICLES = 5  # binge_reader: the fifth article page view of a session
LINGER_S = 300  # product_lingerer: a product page view without add_to_cart lasting > 300 s
HOVER_WINDOW_S = 120  # subscribe_interest: 2 cta_subscribe hovers within 2 minutes


def true_no_session_probability(people: pd.DataFrame, as_of: date, horizon_days: int) -> np.ndarray:
    """What the generator knew on `as_of` of each person (truth_people rows) having no session
    in [as_of, as_of + horizon): 1 once lapsed; else each day they lapse first with the daily
    hazard, or visit unless Poisson draws none (a binge day on BINGE_P of days): the oracle
    churn_risk is measured against."""
    rate = SESSIONS_PER_DAY[[ARCHETYPES.index(a) for a in people.archetype]]
    quiet = (1 - BINGE_P) * np.exp(-rate) + BINGE_P * np.exp(-binge_rate(rate))
    hazard = people.daily_lapse_hazard.to_numpy()
    stay_quiet = (1 - hazard) * quiet  # a day without lapsing and without a session
    days = np.arange(horizon_days)[:, None]
    active = (stay_quiet**days * hazard).sum(axis=0) + stay_quiet**horizon_days
    lapsed = (people.lapse_date < pd.Timestamp(as_of)).to_numpy()
    bots = (people.archetype == "bot").to_numpy()  # one session a day, without fail
    return np.where(lapsed, 1.0, np.where(bots, 0.0, active))


def person_keys(people: pd.DataFrame) -> np.ndarray:
    """Each generated person's key in the ground truth files."""
    return np.array([f"p{p:07d}" for p in people.number])


def _page_views(ev: pd.DataFrame) -> pd.DataFrame:
    """One row per page view (events sorted by session and time): its session, start, type,
    dwell (to the next page view, or to the page's last event), deepest scroll mark, whether
    it had a related-article click or an add_to_cart, its cta_subscribe hovers."""
    views = ev[ev.event == EV["page_view"]][["session", "page", "t", "page_type"]]
    following = views.groupby("session").t.shift(-1)
    by_page = ev.groupby("page")
    last_event = by_page.t.max().reindex(views.page).to_numpy()
    views = views.assign(dwell=np.where(following.isna(), last_event, following) - views.t)

    def per_page(mask: pd.Series, how: str) -> np.ndarray:
        return (
            ev[mask].groupby("page").size().reindex(views.page, fill_value=0).to_numpy()
            if how == "count"
            else ev[mask].groupby("page").scroll_percent.max().reindex(views.page).to_numpy()
        )

    return views.assign(
        max_scroll=np.nan_to_num(per_page(ev.event == EV["scroll"], "max")),
        clicked_related=per_page(
            (ev.event == EV["click"]) & (ev.element == EL["related_article"]), "count"
        )
        > 0,
        carted=per_page(ev.event == EV["add_to_cart"], "count") > 0,
        subscribe_hovers=per_page(
            (ev.event == EV["hover"]) & (ev.element == EL["cta_subscribe"]), "count"
        ),
    )


def _checkout_waits(ev: pd.DataFrame) -> pd.DataFrame:
    """Each add_to_cart with the wait to its person's next checkout_start (NaN: none came)."""
    carts = ev[ev.event.isin([EV["add_to_cart"], EV["checkout_start"]])].sort_values(
        ["person", "t"]
    )
    is_checkout = carts.event.to_numpy() == EV["checkout_start"]
    next_checkout = (
        pd.Series(np.where(is_checkout, carts.t.to_numpy(), np.nan), index=carts.index)
        .groupby(carts.person.to_numpy())
        .bfill()
    )
    adds = carts[~is_checkout]
    return adds.assign(wait=next_checkout[~is_checkout] - adds.t)


def _articles_in_window(views: pd.DataFrame) -> pd.Series:
    """Per session with article page views: the most that open within any 10 minutes."""
    articles = views[views.page_type == PT["article"]]
    # one sortable integer per view: session, then milliseconds (as the dumps keep them)
    key = articles.session.to_numpy().astype(np.int64) * 10**11 + np.floor(
        articles.t.to_numpy() * 1000
    ).astype(np.int64)
    order = np.argsort(key, kind="stable")
    key = key[order]
    opened = np.arange(len(key)) - np.searchsorted(key, key - ARTICLE_WINDOW_S * 1000) + 1
    return pd.Series(opened).groupby(articles.session.to_numpy()[order]).max()


def segment_behaviors(ev: pd.DataFrame, n_sessions: int) -> pd.DataFrame:
    """Per session, whether it meets each session rule of the default segments, measured on
    the generated events with the thresholds of thresholds.py (bounce: one page view, all
    events within 10 s)."""
    views = _page_views(ev)
    waits = _checkout_waits(ev)
    session = views.session.to_numpy()

    def any_page(mask: np.ndarray) -> np.ndarray:
        return np.isin(np.arange(n_sessions), session[mask])

    articles = _articles_in_window(views).reindex(range(n_sessions), fill_value=0).to_numpy()
    hovers = (
        views.groupby("session").subscribe_hovers.sum().reindex(range(n_sessions), fill_value=0)
    )
    times = ev.groupby("session").t.agg(["min", "max"]).reindex(range(n_sessions))
    span = times["max"] - times["min"]
    pages = views.groupby("session").size().reindex(range(n_sessions), fill_value=0)
    abandoned = waits[waits.wait.isna() | (waits.wait > CHECKOUT_WAIT_S)].session.to_numpy()
    return pd.DataFrame(
        {
            "subscribe_curious": (articles >= ARTICLES_IN_WINDOW)
            & (hovers.to_numpy() >= SUBSCRIBE_HOVERS),
            "deep_read": any_page(
                (views.page_type == PT["article"]).to_numpy()
                & (views.dwell.to_numpy() >= ARTICLE_DWELL_S)
                & (views.max_scroll.to_numpy() >= DEEP_SCROLL_PERCENT)
                & views.clicked_related.to_numpy()
            ),
            "product_hesitation": any_page(
                (views.page_type == PT["product"]).to_numpy()
                & ~views.carted.to_numpy()
                & (views.dwell.to_numpy() > PRODUCT_DWELL_S)
            ),
            "cart_abandon": np.isin(np.arange(n_sessions), abandoned),
            "bounce": (pages.to_numpy() == 1) & (span.to_numpy() < BOUNCE_S),
        }
    )


def _trigger_truth(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(firings, decoys): session, trigger and the moment (decoys: how far below)."""
    ev = events.sort_values(["session", "t"], kind="stable")
    views = _page_views(ev)
    fired, decoys = [], []
    # cart_abandoned: per person, the next checkout_start after each add_to_cart
    adds = _checkout_waits(ev)
    left = adds[adds.wait.isna() | (adds.wait > CHECKOUT_WAIT_S)]
    first = left.groupby("session").t.min()
    fired.append(
        pd.DataFrame(
            {"trigger": "cart_abandoned", "session": first.index, "t": first + CHECKOUT_WAIT_S}
        )
    )
    near = adds[(adds.wait <= CHECKOUT_WAIT_S) & (adds.wait > CHECKOUT_WAIT_S - 60)]
    decoys.append(
        pd.DataFrame(
            {
                "trigger": "cart_abandoned",
                "session": near.session,
                "margin_s": CHECKOUT_WAIT_S - near.wait,
            }
        )
    )
    # binge_reader: the fifth article page view; decoys: sessions with exactly four
    articles = views[views.page_type == PT["article"]]
    nth = articles.groupby("session").cumcount() + 1
    fifth = articles[nth == ARTICLES]
    fired.append(pd.DataFrame({"trigger": "binge_reader", "session": fifth.session, "t": fifth.t}))
    per_session = articles.groupby("session").size()
    four = per_session[per_session == ARTICLES - 1]
    decoys.append(
        pd.DataFrame({"trigger": "binge_reader", "session": four.index, "margin_s": np.nan})
    )
    # product_lingerer: a product page view without add_to_cart open > 300 s
    product = (views.page_type == PT["product"]) & ~views.carted
    lingered = views[product & (views.dwell > LINGER_S)]
    first = lingered.groupby("session").t.min()
    fired.append(
        pd.DataFrame({"trigger": "product_lingerer", "session": first.index, "t": first + LINGER_S})
    )
    close = views[product & (views.dwell <= LINGER_S) & (views.dwell > LINGER_S - 30)]
    decoys.append(
        pd.DataFrame(
            {
                "trigger": "product_lingerer",
                "session": close.session,
                "margin_s": LINGER_S - close.dwell,
            }
        )
    )
    # subscribe_interest: the first cta_subscribe hover with another in the 2 minutes before
    hovers = ev[(ev.event == EV["hover"]) & (ev.element == EL["cta_subscribe"])]
    gap = hovers.t - hovers.groupby("session").t.shift(1)
    second = hovers[gap <= HOVER_WINDOW_S].groupby("session").t.min()
    fired.append(
        pd.DataFrame({"trigger": "subscribe_interest", "session": second.index, "t": second})
    )
    slow = hovers[(gap > HOVER_WINDOW_S) & (gap <= HOVER_WINDOW_S + 30)]
    decoys.append(
        pd.DataFrame(
            {
                "trigger": "subscribe_interest",
                "session": slow.session,
                "margin_s": gap[slow.index] - HOVER_WINDOW_S,
            }
        )
    )
    fired_all = pd.concat(fired, ignore_index=True)
    decoy_all = pd.concat(decoys, ignore_index=True)
    # a decoy session must not fire that trigger some other way
    decoy_all = decoy_all.merge(fired_all[["trigger", "session"]], how="left", indicator=True)
    decoy_all = decoy_all[decoy_all._merge == "left_only"].drop(columns="_merge")
    return fired_all, decoy_all.drop_duplicates(["trigger", "session"])


def write_truth(
    truth: Path,
    config: GeneratorConfig,
    people: pd.DataFrame,
    devices: pd.DataFrame,
    sessions: pd.DataFrame,
    events: pd.DataFrame,
    first_session: int = 0,
) -> None:
    """What the generator planted, for tests: people, sessions, trigger firings and shared
    devices (sessions numbered from `first_session`: a cohort's follow the previous one's)."""
    epoch = pd.Timestamp(config.start)
    anon = pd.Series(
        [anonymous_id(config.seed, d) for d in range(len(devices))]
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
            "person_key": person_keys(people),
            "user_id": np.where(people.registered, [user_id(p) for p in people.number], None),
            "archetype": np.array(ARCHETYPES)[people.archetype],
            "true_purchase_propensity": people.propensity,
            "lapse_date": [
                epoch + pd.Timedelta(days=int(d)) if d < config.days else pd.NaT
                for d in lapse_days(config, people.archetype.to_numpy())
            ],
            "daily_lapse_hazard": config.lapse_hazard,
            "country": np.array(COUNTRIES)[people.country],
            "favorite_category": np.array(CATEGORIES)[people.favorite_category],
            "is_registered": people.registered,
            "is_bot": people.archetype == ARCHETYPES.index("bot"),
            "is_opted_out": opted_out & ~regranted,
            "ever_opted_out": opted_out,
            "declines_marketing": declines_marketing(people.number.to_numpy()),
            "anonymous_ids": ids.reindex(people.person).to_numpy(),
        }
    )
    span = events.groupby("session").t.agg(["min", "max", "size"])
    flags = ["purchase", "login_session", "is_bot", "consent_opt_out", "consent_regrant"]
    sessions_out = pd.concat(
        [
            sessions[["session", "person", "device", "late_days", *flags]],
            segment_behaviors(events.sort_values(["session", "t"], kind="stable"), len(sessions)),
        ],
        axis=1,
    )
    sessions_out["person_key"] = people_out.person_key.to_numpy()[sessions.person]
    sessions_out["anonymous_id"] = anon.to_numpy()[sessions.device]
    sessions_out["session_start_at"] = epoch + pd.to_timedelta(span["min"].to_numpy(), unit="s")
    sessions_out["session_end_at"] = epoch + pd.to_timedelta(span["max"].to_numpy(), unit="s")
    sessions_out["n_events"] = span["size"].to_numpy()
    firings, decoys = _trigger_truth(events)
    key_of = sessions_out.set_index("session").person_key
    firings = firings.assign(
        session=firings.session + first_session,
        person_key=key_of.reindex(firings.session).to_numpy(),
        fired_at=epoch + pd.to_timedelta(firings.t.to_numpy(), unit="s"),
    ).drop(columns="t")
    decoys = decoys.assign(
        session=decoys.session + first_session,
        person_key=key_of.reindex(decoys.session).to_numpy(),
    )
    sessions_out["session"] += first_session
    firings.to_parquet(truth / "trigger_firings.parquet", index=False)
    decoys.to_parquet(truth / "trigger_decoys.parquet", index=False)
    people_out.to_parquet(truth / "people.parquet", index=False)
    sessions_out.drop(columns=["person", "device"]).to_parquet(
        truth / "sessions.parquet", index=False
    )
    pd.Series(shared_ids.to_numpy(), name="anonymous_id").to_frame().to_parquet(
        truth / "shared_devices.parquet", index=False
    )


def duplicates_per_day(delivered: pd.DataFrame, days: int) -> np.ndarray:
    """The duplicate deliveries each day's file carries."""
    return np.bincount(
        day_of(delivered.received_t[delivered.duplicate_of >= 0].to_numpy()), minlength=days
    )


def write_accounting(truth: Path, accounting: pd.DataFrame, duplicates: np.ndarray) -> None:
    """files.csv: what ingest must read, quarantine, drop as duplicates and load, per file."""
    accounting["rows_duplicate"] = duplicates
    accounting["rows_loaded"] = (
        accounting.rows_read - accounting.rows_duplicate - accounting.rows_quarantined
    )
    accounting.to_csv(truth / "files.csv", index=False)
