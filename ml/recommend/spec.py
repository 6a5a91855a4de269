"""Recommender specs (ml/specs/recommend_*.yaml, task: recommendation): which items, how the
evaluation splits time, and the hyperparameter grid of each learned model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.config import load_yaml
from microseg.errors import ConfigError
from ml.specs import RECOMMENDATION, spec_field, spec_names

ITEM_TYPES = ("article", "video", "product")
LEARNED = ("als", "bpr")  # the kinds with a grid; the baselines have no hyperparameters


@dataclass(frozen=True)
class RecommendSpec:
    name: str
    description: str
    item_types: tuple[str, ...]
    k: int
    test_days: int
    seed: int
    grids: dict[str, list[dict[str, Any]]]  # kind -> every combination of its grid
    min_gain: float  # relative NDCG gain over the champion to be promoted
    min_lift_over_popularity: float  # relative NDCG gain over popularity to be promoted
    raw: dict[str, Any]


def _grid(raw: dict[str, Any], kind: str, name: str) -> list[dict[str, Any]]:
    space = spec_field(raw, f"search.{kind}", dict, name)
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"model spec '{name}': search.{kind}.{key}: a non-empty list")
    keys = sorted(space)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*map(space.get, keys))
    ]


def load_recommend_spec(name: str, specs_dir: Path) -> RecommendSpec:
    """Read and check <specs_dir>/<name>.yaml, a recommender spec."""
    path = specs_dir / f"{name}.yaml"
    known = spec_names(specs_dir, RECOMMENDATION)
    if name not in known:
        raise ConfigError(
            f"no recommender spec {name!r} in {specs_dir} (known: {', '.join(known) or 'none'})"
        )
    raw = load_yaml(path.read_text("utf-8"))
    if raw.get("name") != name:
        raise ConfigError(f"model spec '{name}': name must be {name!r} (the file name)")
    items = spec_field(raw, "items", list, name)
    unknown = sorted(set(items) - set(ITEM_TYPES))
    if not items or unknown:
        raise ConfigError(
            f"model spec '{name}': items: {unknown or 'empty'}; known: {', '.join(ITEM_TYPES)}"
        )
    k = spec_field(raw, "evaluation.k", int, name)
    test_days = spec_field(raw, "evaluation.test_days", int, name)
    if k < 1 or test_days < 1:
        raise ConfigError(f"model spec '{name}': evaluation.k and test_days must be at least 1")
    return RecommendSpec(
        name=name,
        description=spec_field(raw, "description", str, name),
        item_types=tuple(items),
        k=k,
        test_days=test_days,
        seed=spec_field(raw, "search.seed", int, name),
        grids={kind: _grid(raw, kind, name) for kind in LEARNED},
        min_gain=float(spec_field(raw, "promotion.min_gain", (int, float), name)),
        min_lift_over_popularity=float(
            spec_field(raw, "promotion.min_lift_over_popularity", (int, float), name)
        ),
        raw=raw,
    )
