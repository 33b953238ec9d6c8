"""Generated catalogues for the serving benchmark: clustered factors, written as real artifacts.

No training: factors are drawn around ``n_topics`` topic centres (items of a topic resemble each
other, customers like a mix of one to three topics), with item norms spread like popularity, so an
approximate index meets the kind of structure a trained model has and its recall is meaningful.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import ann, artifact, similar_table
from service.customer_table import build_customer_table
from service.neighbours import NeighboursSpec
from service.ranking import FactorModel

CHANNELS = ("web", "app", "email", "store")


def clustered_factors(
    n_items: int, n_users: int, dim: int = 64, *, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
    """Item factors, customer factors and each item's topic."""
    rng = np.random.default_rng(seed)
    n_topics = max(8, int(np.sqrt(n_items)))
    centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
    topic = rng.integers(0, n_topics, size=n_items)
    items = centres[topic] + 0.6 * rng.normal(size=(n_items, dim)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.25, size=(n_items, 1)).astype(np.float32) / np.sqrt(dim)
    users = np.zeros((n_users, dim), dtype=np.float32)
    for _ in range(3):
        weight = rng.random(size=(n_users, 1)).astype(np.float32)
        users += weight * centres[rng.integers(0, n_topics, size=n_users)]
    users += 0.5 * rng.normal(size=(n_users, dim)).astype(np.float32)
    return items.astype(np.float32), (users / np.sqrt(dim)).astype(np.float32), topic


# Categories of the generated catalogue: items of a topic share one, so a category's items sit in
# a few of the index's clusters, as a real catalogue's do.
N_CATEGORIES = 50


def category_names(topic: np.ndarray) -> list[str]:
    """Each item's category name from its topic: ``cat00`` ... ``cat49``."""
    return [f"cat{t % N_CATEGORIES:02d}" for t in topic]


def write_catalogue(
    model_dir: Path,
    n_items: int,
    n_users: int,
    *,
    dim: int = 64,
    seed: int = 0,
    with_index: bool = True,
    version: str | None = None,
    neighbours: int = 0,
    customer_table: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Write one artifact (LATEST) with ``n_items`` items and ``n_users`` customers.

    ``neighbours`` > 0 adds a sparse item-item component (what training ships for a blend with
    EASE): each item lends score to that many items of its own cluster. ``customer_table``:
    ship each customer's best items (``service/customer_table.py``), as training does.
    Returns the artifact's folder and its arrays (for the hot-swap copy and recall measurement).
    """
    rng = np.random.default_rng(seed + 1)
    items, users, topic = clustered_factors(n_items, n_users, dim, seed=seed)
    categories = category_names(topic)
    popularity = {"all": rng.pareto(1.5, size=n_items).astype(np.float32)}
    for ch in CHANNELS:
        popularity[ch] = rng.pareto(1.5, size=n_items).astype(np.float32)
    bought_per_user = rng.integers(0, 8, size=n_users)
    indptr = np.concatenate([[0], np.cumsum(bought_per_user)]).astype(np.int64)
    bought = rng.integers(0, n_items, size=int(indptr[-1])).astype(np.int32)
    # Sorted ids of fixed width, so rows are already in id order.
    arrays, channels = artifact.pack(
        user_ids=[f"c{i:07d}" for i in range(n_users)],
        user_factors=users,
        item_ids=[f"i{j:07d}" for j in range(n_items)],
        item_factors=items,
        item_categories=categories,
        popularity=popularity,
        bought_indptr=indptr,
        bought_items=bought,
        neighbours=same_cluster_neighbours(topic, neighbours, rng) if neighbours else None,
    )
    calibration = None
    if with_index:  # as training ships it: built, then calibrated on the customers
        index = ann.build_index(arrays["item_factors"], seed=seed, groups=arrays["item_category"])
        calibration = ann.calibrate(index, arrays)
        arrays.update(index)
    if n_items <= similar_table.DEFAULT_MAX_ITEMS:
        arrays.update(similar_table.build_similar(arrays["item_factors"]))  # as training ships it
    manifest = new_manifest(
        channels, n_users, n_items, version, "neighbours_indptr" in arrays, calibration
    )
    if customer_table:  # as training ships it: ranked as the service ranks
        ranked = FactorModel(artifact.Artifact(path=model_dir, manifest=manifest, arrays=arrays))
        arrays.update(build_customer_table(ranked))
    return artifact.save(model_dir, manifest, arrays), arrays


def same_cluster_neighbours(
    topic: NDArray[np.int64], per_item: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """CSR ``(indptr, indices, weights)``: each item's ``per_item`` random same-cluster items."""
    n = len(topic)
    by_topic = np.argsort(topic, kind="stable")
    starts = np.searchsorted(topic[by_topic], topic)
    sizes = np.bincount(topic, minlength=int(topic.max()) + 1)[topic]
    picks = starts[:, None] + (rng.random((n, per_item)) * sizes[:, None]).astype(np.int64)
    indices = by_topic[picks].astype(np.int32).ravel()
    weights = rng.exponential(0.05, size=n * per_item).astype(np.float32)
    return np.arange(n + 1, dtype=np.int64) * per_item, indices, weights


def new_manifest(
    channels: list[str],
    n_users: int,
    n_items: int,
    version: str | None = None,
    neighbours: bool = False,
    calibration: ann.AnnSpec | None = None,
) -> artifact.Manifest:
    """A manifest for a generated model (``neighbours``: the arrays hold the component;
    ``calibration``: their index's)."""
    return artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=version or artifact.new_version("bench"),
        algorithm="generated",
        created_at=datetime.now(UTC),
        popularity_channels=channels,
        counts={"users": n_users, "items": n_items},
        neighbours=NeighboursSpec(weight=1.0, normalise=True, part="ease") if neighbours else None,
        ann=calibration,
    )
