"""The simulated site: archetypes and their rates, vocabularies, the generator's settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from microseg.generate.experiments import PlantedEffect

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
BINGE_P = 0.03  # a day's chance of a binge, when sessions come at binge_rate(rate)
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
    planted_effects: tuple[PlantedEffect, ...] = ()  # true effects of experiments (experiments.py)
    lapse_hazard: float = 0.0  # a day's chance that a person stops visiting for good (churn)


@dataclass(frozen=True)
class GenerationSummary:
    persons: int
    sessions: int
    events: int
    files: list[Path]
    ground_truth_dir: Path


def binge_rate(rate: np.ndarray) -> np.ndarray:
    """The sessions a person expects on a binge day, from their usual daily rate."""
    return rate * 5 + 1


def pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (rows sum to 1), vectorized."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return (u > cum).sum(axis=1)
