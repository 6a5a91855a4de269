"""The events of each page view, logins (identify) and consent events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from microseg.generate.world import EL, EV, PAGE_ELEMENTS, PAGE_TYPES, PT


def draw_events(rng, p: pd.DataFrame, s: pd.DataFrame) -> pd.DataFrame:
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
    # a one-page session's last event just before or after the bounce threshold (thresholds.py)
    linger = s.bounce_linger_s.to_numpy()[p.session] * (role == "bounce")
    m = linger > 0
    emit(pages[m], EV["scroll"], t0[m] + linger[m], scroll_percent=25.0)
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
    related = (
        (role == "deep")
        | (live & (pt == PT["article"]) & (role == "base") & (rng.random(len(p)) < 0.25))
        | p.near_read.to_numpy()
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
    # the product of a product page is the item it shows (its sku is the page's content_id)
    product = np.where(pt == PT["product"], p.content.to_numpy(), rng.integers(1, 500, len(p)))
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
