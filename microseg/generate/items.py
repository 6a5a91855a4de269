"""The catalog behind article, video and product pages, and the tastes that pick from it.

Each item has a category, a popularity and latent factors; each person a taste vector (their
archetype's plus their own). An item page shows an item of the page's category drawn with
probability softmax(taste . factors + popularity), so the items a person engages with follow
similar people's, and the generator knows the true ranking (`oracle_scores`) a recommender is
measured against. The draws use their own random stream: the rest of the world stays as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from microseg.generate.world import ARCHETYPES, CATEGORIES, PAGE_MIX, PAGE_TYPES, PT

ITEM_PAGE_TYPES = ("article", "video", "product")
ITEMS_PER_CATEGORY = {"article": 20, "video": 10, "product": 25}
ITEM_PREFIX = {"article": "article_", "video": "video_", "product": "sku_"}
TASTE_DIMS = 8
TASTE_SCALE = 3.0  # how strongly taste beats popularity in the softmax
PERSON_TASTE_SD = 0.2  # a person's own taste around their archetype's (which has sd 1)
FAVORITE_CATEGORY_SHARE = 0.6  # of pages in the person's favorite category (else uniform)
_STREAM = 15  # the random stream of the catalog and the item draws


def page_category(page: np.ndarray, favorite: np.ndarray) -> np.ndarray:
    """The category of each page: mostly the person's favorite, else spread by the page id
    (a hash, so all events of a page agree without storing it)."""
    page = np.asarray(page, dtype=np.int64)
    in_favorite = (page * 2654435761) % 100 < FAVORITE_CATEGORY_SHARE * 100
    return np.where(in_favorite, favorite, page % len(CATEGORIES))


def draw_catalog(
    seed: int, people: pd.DataFrame, taste_seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """(items, tastes): one row per item (id number within its page type, category,
    popularity, factors) and one taste vector per person. The catalog comes from `seed`, the
    same for every cohort of people; a cohort's own tastes from `taste_seed` (the first
    cohort's, whose seed is the catalog's, go on in the catalog's stream)."""
    rng = np.random.default_rng([seed, _STREAM])
    frames = []
    for page_type in ITEM_PAGE_TYPES:
        per = ITEMS_PER_CATEGORY[page_type]
        n = per * len(CATEGORIES)
        frames.append(
            pd.DataFrame(
                {
                    "page_type": PT[page_type],
                    "number": np.arange(1, n + 1),
                    "category": np.arange(n) // per,
                    "popularity": rng.normal(0, 0.7, n),
                    "factors": list(rng.normal(0, 1, (n, TASTE_DIMS))),
                }
            )
        )
    centers = rng.normal(0, 1, (len(ARCHETYPES), TASTE_DIMS))
    taste_rng = rng if taste_seed == seed else np.random.default_rng([taste_seed, _STREAM])
    own = taste_rng.normal(0, PERSON_TASTE_SD, (len(people), TASTE_DIMS))
    tastes = centers[people.archetype.to_numpy()] + own
    return pd.concat(frames, ignore_index=True), tastes


def _logits(tastes: np.ndarray, items: pd.DataFrame) -> np.ndarray:
    factors = np.stack(items.factors.to_numpy())
    affinity = tastes @ factors.T / np.sqrt(TASTE_DIMS)
    return TASTE_SCALE * affinity + items.popularity.to_numpy()


def assign_items(
    catalog_seed: int, seed: int, pages: pd.DataFrame, sessions: pd.DataFrame, people
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """(content, items, tastes): each page's content number, drawn from the catalog for item
    pages (softmax per page type and category, Gumbel-max, from the cohort's `seed`) and kept
    for the others."""
    items, tastes = draw_catalog(catalog_seed, people, seed)
    rng = np.random.default_rng([seed, _STREAM, 1])
    person = sessions.person.to_numpy()[pages.session.to_numpy()]
    category = page_category(pages.page.to_numpy(), people.favorite_category.to_numpy()[person])
    page_type = pages.page_type.to_numpy()
    content = pages.content.to_numpy().copy()
    for (pt, cat), group in items.groupby(["page_type", "category"]):
        rows = np.flatnonzero((page_type == pt) & (category == cat))
        if not len(rows):
            continue
        logits = _logits(tastes[person[rows]], group)
        gumbel = -np.log(-np.log(rng.random(logits.shape)))
        content[rows] = group.number.to_numpy()[np.argmax(logits + gumbel, axis=1)]
    return content, items, tastes


def item_ids(items: pd.DataFrame) -> np.ndarray:
    """The content_id each item carries in the events (products: their sku)."""
    prefix = np.array([ITEM_PREFIX[PAGE_TYPES[t]] for t in items.page_type])
    return np.char.add(prefix.astype(str), items.number.to_numpy().astype(str))


def write_catalog_truth(truth: Path, items: pd.DataFrame) -> None:
    catalog = pd.DataFrame(
        {
            "item_id": item_ids(items),
            "item_type": np.array(PAGE_TYPES)[items.page_type.to_numpy()],
            "category": np.array(CATEGORIES)[items.category.to_numpy()],
            "popularity": items.popularity,
            "factors": items.factors,
        }
    )
    catalog.to_parquet(truth / "items.parquet", index=False)


def write_tastes(truth: Path, tastes: np.ndarray, person_keys: np.ndarray) -> None:
    pd.DataFrame({"person_key": person_keys, "taste": list(tastes)}).to_parquet(
        truth / "tastes.parquet", index=False
    )


def oracle_scores(truth: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(person_keys, item_ids, scores): each person's true chance that a page view of theirs
    shows each item, P(page type) x P(category) x softmax within the page type and category.
    A ranking by these scores is the best any recommender can do on the generated data."""
    items = pd.read_parquet(truth / "items.parquet")
    tastes = pd.read_parquet(truth / "tastes.parquet")
    people = pd.read_parquet(
        truth / "people.parquet", columns=["person_key", "archetype", "favorite_category"]
    )
    people = people.set_index("person_key").reindex(tastes.person_key)
    taste = np.stack(tastes.taste.to_numpy())
    items = items.assign(factors=items.factors.map(np.asarray))
    logits = _logits(taste, items)
    group = items.item_type + ":" + items.category
    scores = np.empty_like(logits)
    for _, idx in items.groupby(group).indices.items():
        part = np.exp(logits[:, idx] - logits[:, idx].max(axis=1, keepdims=True))
        scores[:, idx] = part / part.sum(axis=1, keepdims=True)
    archetype = pd.Index(ARCHETYPES).get_indexer(people.archetype)
    type_share = PAGE_MIX[archetype][:, pd.Index(PAGE_TYPES).get_indexer(items.item_type)]
    favorite = people.favorite_category.to_numpy()[:, None] == items.category.to_numpy()[None, :]
    elsewhere = (1 - FAVORITE_CATEGORY_SHARE) / len(CATEGORIES)
    category_share = FAVORITE_CATEGORY_SHARE * favorite + elsewhere
    scores *= type_share * category_share
    return tastes.person_key.to_numpy(), items.item_id.to_numpy(), scores


def oracle_reference(truth: Path) -> pd.DataFrame:
    """The oracle's scores keyed as the pipeline keys people: (user = person_id, item,
    score), for people whose events the pipeline saw (tests and `make bench`)."""
    from microseg.privacy.erase import person_id_of

    keys, items, scores = oracle_scores(truth)
    people = pd.read_parquet(truth / "people.parquet").set_index("person_key").reindex(keys)
    # devices a person used; missing (null or NaN) for someone who never had a session
    devices = people.anonymous_ids.map(lambda ids: list(ids) if hasattr(ids, "__len__") else [])
    seen = devices.map(len).to_numpy() > 0  # people without a session never show up
    identity = np.where(
        people.is_registered,
        "user:" + people.user_id.fillna(""),
        "anon:" + devices.map(lambda ids: ids[0] if ids else ""),
    )
    person_ids = [person_id_of(key) for key in identity[seen]]
    return pd.DataFrame(
        {
            "user": np.repeat(person_ids, len(items)),
            "item": np.tile(items, len(person_ids)),
            "score": scores[seen].ravel(),
        }
    )
