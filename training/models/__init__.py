"""Model families, each fitted into the one artifact format: ``score = item_factors @ user``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.models.base import Data, Fitted
from training.models.factorization import fit_als, fit_bpr
from training.models.hybrid import fit_lightfm
from training.models.neighbours import fit_ease, fit_itemknn
from training.models.popularity import (
    fit_adoption,
    fit_attributes,
    fit_popularity,
    fit_recent_popularity,
)

Fitter = Callable[[Data, dict[str, Any]], Fitted]

# Every model the trainer knows, by the name used in configs, reports and manifests.
FITTERS: dict[str, Fitter] = {
    "popularity": fit_popularity,
    "recent_popularity": fit_recent_popularity,
    "adoption": fit_adoption,
    "als": fit_als,
    "bpr": fit_bpr,
    "itemknn": fit_itemknn,
    "ease": fit_ease,
    "lightfm": fit_lightfm,
    "attributes": fit_attributes,
}
BASELINES: tuple[str, ...] = tuple(FITTERS)
# Priors: models that rank the same for every customer, by each item's own record (sales, first
# purchases). Never the probe the event weights are tuned with; a new item has no record to map.
PRIORS = frozenset({"popularity", "recent_popularity", "adoption"})

__all__ = ["BASELINES", "FITTERS", "PRIORS", "Data", "Fitted", "Fitter"]
