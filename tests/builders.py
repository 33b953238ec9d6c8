"""Hand-built artifacts with a known right answer (implicit's checkerboard idea)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service import ann, artifact

N_USERS = 10
N_ITEMS = 20


def user(i: int) -> str:
    return f"u{i}"


def item(j: int) -> str:
    return f"i{j:02d}"


def save_packed(model_dir: Path, packed: tuple[dict[str, Any], list[str]], **fields: Any) -> Path:
    """Save ``artifact.pack``'s (arrays, channels) as a version of ``model_dir``; manifest fields
    default to a test model's (``v1``, ``test``, 2026-01-01)."""
    arrays, channels = packed
    manifest = artifact.Manifest(
        **{
            "format_version": artifact.FORMAT_VERSION,
            "model_version": "v1",
            "algorithm": "test",
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            "popularity_channels": channels,
            **fields,
        }
    )
    return artifact.save(model_dir, manifest, arrays)


def with_arrays(folder: Path, path: Path, extra: dict[str, Any]) -> Path:
    """The artifact at ``path`` with ``extra`` arrays added or replaced, saved under ``folder``."""
    loaded = artifact.load(path)
    arrays = {**{k: np.asarray(v) for k, v in loaded.arrays.items()}, **extra}
    return artifact.save(folder, loaded.manifest, arrays)


def checkerboard_artifact(
    model_dir: Path,
    *,
    version: str = "v1-checkerboard",
    metrics: dict[str, object] | None = None,
    created_at: datetime | None = None,
    fold_in: artifact.FoldIn | None = None,
) -> Path:
    """Even customers like even items, odd customers odd items.

    - Within each parity, lower item numbers score higher (``i00`` > ``i02`` > ...).
    - In the training data ``u0`` bought ``i00`` and ``u1`` bought ``i01``.
    - Categories: ``even`` and ``odd``; ``i19`` has none.
    - Popularity: overall ``i00`` first then by number; on ``web`` odd items lead
      (``i19`` first); on ``store`` even items lead (``i18`` first).
    """
    # The scale of a least-squares fit to one purchase (as ALS would give), so that request-time
    # fold-in of a few new events moves a customer as much as it would with a trained model.
    user_factors = 0.2 * np.array(
        [[1, 0] if i % 2 == 0 else [0, 1] for i in range(N_USERS)], np.float32
    )
    item_factors = np.array(
        [[1 - 0.01 * j, 0] if j % 2 == 0 else [0, 1 - 0.01 * j] for j in range(N_ITEMS)],
        np.float32,
    )
    categories = ["even" if j % 2 == 0 else "odd" for j in range(N_ITEMS)]
    categories[19] = None  # type: ignore[call-overload]
    overall = np.arange(N_ITEMS, 0, -1, dtype=np.float32)
    web = np.array([j if j % 2 else 0 for j in range(N_ITEMS)], np.float32)
    store = np.array([0 if j % 2 else j + 1 for j in range(N_ITEMS)], np.float32)
    bought_indptr = np.array([0, 1, 2] + [2] * (N_USERS - 2), np.int64)
    bought_items = np.array([0, 1], np.int32)
    users = [user(i) for i in range(N_USERS)]
    arrays, channels = artifact.pack(
        user_ids=users,
        user_factors=user_factors,
        item_ids=[item(j) for j in range(N_ITEMS)],
        item_factors=item_factors,
        item_categories=categories,
        popularity={"all": overall, "web": web, "store": store},
        bought_indptr=bought_indptr,
        bought_items=bought_items,
    )
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=version,
        algorithm="checkerboard",
        created_at=created_at or datetime(2026, 1, 1, tzinfo=UTC),
        popularity_channels=channels,
        counts={"users": N_USERS, "items": N_ITEMS},
        metrics=metrics or {},
        **({"fold_in": fold_in} if fold_in is not None else {}),
    )
    return artifact.save(model_dir, manifest, arrays)


def clustered_artifact(
    model_dir: Path, n_items: int, *, with_index: bool, seed: int = 0, spread: float = 0.5
) -> Path:
    """Items around topic centres, customers mixing topics: structure an ANN index can use.

    ``with_index``: ship the approximate index in the artifact, calibrated (else the service
    builds or skips it). ``spread``: the items' distance from their centre (3 blurs the topics,
    as factors of real data are). Categories ``cat0``..``cat9``; 300 customers, none with purchases.
    """
    rng = np.random.default_rng(seed)
    dim, n_users, n_topics = 16, 300, 40
    centres = rng.normal(size=(n_topics, dim)).astype(np.float32)
    topic = rng.integers(0, n_topics, size=n_items)
    items = centres[topic] + spread * rng.normal(size=(n_items, dim)).astype(np.float32)
    users = centres[rng.integers(0, n_topics, size=n_users)] + rng.normal(size=(n_users, dim))
    arrays, channels = artifact.pack(
        user_ids=[f"c{i:04d}" for i in range(n_users)],
        user_factors=users.astype(np.float32),
        item_ids=[f"i{j:06d}" for j in range(n_items)],
        item_factors=items,
        item_categories=[f"cat{t % 10}" for t in topic],
        popularity={"all": rng.random(n_items).astype(np.float32)},
        bought_indptr=np.zeros(n_users + 1, np.int64),
        bought_items=np.zeros(0, np.int32),
    )
    calibration = None
    if with_index:  # as training ships it: built, then calibrated on the customers
        index = ann.build_index(arrays["item_factors"], groups=arrays["item_category"])
        calibration = ann.calibrate(index, arrays)
        arrays.update(index)
    manifest = artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=f"clustered-{n_items}-{'ann' if with_index else 'exact'}",
        algorithm="clustered",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        popularity_channels=channels,
        counts={"users": n_users, "items": n_items},
        ann=calibration,
    )
    return artifact.save(model_dir, manifest, arrays)
