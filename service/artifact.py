"""CONTRACT: the model artifact, a folder of plain numpy arrays plus a JSON manifest.

Layout::

    models/LATEST                     one line: the current version; replaced atomically
    models/<version>/manifest.json    Manifest: parameters, data window, counts, metrics, checksums
    models/<version>/<name>.npy       one array per file, so every array can be memory-mapped

Rows of the user and item arrays are sorted by id (UTF-8 bytes), so an id is found by binary
search on a memory-mapped array and no worker needs its own id -> row dictionary. Scoring is
always ``item_factors @ user_vector``: writers fold biases into the factors. Nothing is pickled.
Large catalogues may ship an approximate nearest-neighbour index as four more arrays (``ann_*``,
see ``service/ann.py``): optional, checksummed and memory-mapped like the others. A model may also
carry a sparse item-item component (``neighbours_*``, see ``service/neighbours.py``), added to the
factor scores as the manifest's ``neighbours`` says (with, when it fits, the same as one dense
block, ``neighbours_dense*``), a table of each item's most similar items
(``similar_*``, see ``service/similar_table.py``), each customer's best items
(``customer_top_*``, see ``service/customer_table.py``), and, when it has more factors than
items, the fold-in's products through the inverse (``foldin_*``, see ``service/foldin.py``).
This module imports only numpy and msgspec; training writes artifacts with it, the service
reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from service.ann import INDEX_ARRAYS, AnnSpec, check_index
from service.customer_table import CUSTOMER_ARRAYS, check_customer_table
from service.errors import ArtifactError
from service.events import DEFAULT_EVENT_WEIGHTS
from service.neighbours import (
    NEIGHBOUR_ARRAYS,
    NEIGHBOUR_DENSE_ARRAYS,
    NeighboursSpec,
    check_neighbours,
)
from service.similar_table import SIMILAR_ARRAYS, check_similar

FORMAT_VERSION = 1
LATEST = "LATEST"
MANIFEST = "manifest.json"
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# name -> (dtype kind, number of dimensions); every artifact has all of them.
REQUIRED_ARRAYS: dict[str, tuple[str, int]] = {
    "user_ids": ("S", 1),  # UTF-8 ids, sorted
    "user_factors": ("f", 2),  # float32 [n_users, dim]
    "item_ids": ("S", 1),  # UTF-8 ids, sorted
    "item_factors": ("f", 2),  # float32 [n_items, dim]
    "item_category": ("i", 1),  # int32 [n_items], index into category_names, -1 = none
    "category_names": ("S", 1),
    "item_popularity": ("f", 2),  # float32 [len(popularity_channels), n_items]
    "bought_indptr": ("i", 1),  # CSR rows: items each customer bought in the training data
    "bought_items": ("i", 1),
}
# The fold-in's products through the inverse (service/foldin.py ``LeastSquares``), both or none:
# float32 [n_items, dim] and [n_items, n_items], shipped for models with more factors than items
# (an exactly exported blend) so that every worker maps one copy instead of computing its own.
FOLDIN_ARRAYS: dict[str, tuple[str, int]] = {
    "foldin_projected": ("f", 2),
    "foldin_kernel": ("f", 2),
}
# Item metadata, when the training data had it; one value per item row.
OPTIONAL_ARRAYS: dict[str, tuple[str, int]] = {
    "item_titles": ("S", 1),  # UTF-8
    "item_brand": ("i", 1),  # int32 index into brand_names, -1 = none
    "brand_names": ("S", 1),
    "item_price": ("f", 1),  # float32, NaN = unknown
    # The training matrix (CSR rows in user order, values after FoldIn.transform), so a known
    # customer's vector can be recomputed with new events at request time.
    "user_items_indptr": ("i", 1),
    "user_items_indices": ("i", 1),
    "user_items_values": ("f", 1),
    # The approximate nearest-neighbour index over item_factors (service/ann.py), all or none.
    **INDEX_ARRAYS,
    # The sparse item-item component (service/neighbours.py), all or none, and its dense block.
    **NEIGHBOUR_ARRAYS,
    **NEIGHBOUR_DENSE_ARRAYS,
    # Each item's most similar items, exact (service/similar_table.py), both or none.
    **SIMILAR_ARRAYS,
    **FOLDIN_ARRAYS,
    # Each customer's best items, ranked when the model was built (service/customer_table.py).
    **CUSTOMER_ARRAYS,
}


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One array file: its checksum, shape and dtype, checked on load."""

    sha256: str
    shape: list[int]
    dtype: str


class DataWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The time span of the events the model was trained on."""

    start: datetime
    end: datetime


class FoldIn(msgspec.Struct, frozen=True, kw_only=True):
    """How the service turns a customer's recent events into a vector at request time.

    The same weights training used (event type x channel x half-life decay, then ``transform``),
    and the ridge regression of implicit's ``recalculate_user``: with confidences
    ``c = alpha * w``, ``u = (YᵀY + Yᵀ(C - I)Y + λI)⁻¹ Yᵀ C p`` (service/foldin.py).
    """

    regularization: float = 0.05
    alpha: float = 1.0
    event_weights: dict[str, float] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS)
    )
    channel_weights: dict[str, float] = msgspec.field(default_factory=dict)
    half_life_days: float = 0.0
    transform: str = "log1p"
    # An event's rating scales its weight by ``rating / rating_scale``, and one below
    # ``min_relevant_rating`` weighs nothing (the customer does not want the item), as training
    # weighted it. None (manifests before ratings were weighted so): a rating changes nothing.
    rating_scale: float | None = None
    min_relevant_rating: float = 0.0
    # A customer the model does not know, with at most this many events, gets the channel's
    # popular items instead of a folded-in vector: training found popularity ranked such new
    # customers' next purchases better (``training/coldstart.py``, ``new_customer_policy``).
    popular_until_events: int = 0


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a model is, how it was made and how well it did; new fields get defaults."""

    format_version: int
    model_version: str
    algorithm: str
    created_at: datetime
    params: dict[str, Any] = {}
    data_window: DataWindow | None = None
    # The time of the erasure list training honoured (the exporter's snapshot of it): customers
    # erased before it are in the data only with their later events; those erased since may be in
    # it with earlier ones, so the service treats them as strangers. None: no list was read.
    erasures_as_of: datetime | None = None
    counts: dict[str, int] = {}
    # Row 0 of item_popularity is "all"; the others are these channels in order.
    popularity_channels: list[str] = msgspec.field(default_factory=lambda: ["all"])
    # The half-life (days; 0: none) item_popularity is decayed with, measured back from
    # data_window.end: chosen on validation for the customers it serves (training/fallback.py).
    # None (manifests from before the choice): the matrix's, config.weights.half_life_days.
    popularity_half_life_days: float | None = None
    metrics: dict[str, Any] = {}
    config: dict[str, Any] = {}
    fold_in: FoldIn = FoldIn()
    # Set when the arrays hold a sparse item-item component (service/neighbours.py).
    neighbours: NeighboursSpec | None = None
    # Set when the arrays hold an ANN index calibrated at build (service/ann.py).
    ann: AnnSpec | None = None
    files: dict[str, FileEntry] = {}


@dataclass(frozen=True)
class Artifact:
    """A loaded model version: its manifest, its folder and its (memory-mapped) arrays."""

    path: Path
    manifest: Manifest
    arrays: Mapping[str, NDArray[Any]]

    @property
    def version(self) -> str:
        """The model version, the artifact folder's name."""
        return self.manifest.model_version


def encode_ids(ids: Any) -> NDArray[np.bytes_]:
    """Turn string ids into the artifact's UTF-8 bytes array (``S`` dtype)."""
    encoded = [str(i).encode("utf-8") for i in ids]
    width = max((len(e) for e in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def new_version(algorithm: str, now: datetime | None = None) -> str:
    """A sortable, unique version name: ``20261120T030000Z-als-3f2a1c``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{algorithm}-{os.urandom(3).hex()}"


def save(
    model_dir: str | Path,
    manifest: Manifest,
    arrays: Mapping[str, NDArray[Any]],
    *,
    make_latest: bool = True,
) -> Path:
    """Write an artifact under ``model_dir/<manifest.model_version>`` and switch ``LATEST``.

    The arrays are checked, written into a temporary folder that is renamed into place, and only
    then is ``LATEST`` replaced (``os.replace``), so a reader never sees a partial artifact.
    ``arrays`` come from ``pack``, which sorts rows by id.

    Raises:
        ArtifactError: the arrays break the contract, or the version already exists.
    """
    _check_version_name(manifest.model_version)
    _check_arrays(arrays, manifest)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / manifest.model_version
    if final.exists():
        raise ArtifactError(
            f"model version {manifest.model_version!r} already exists in {model_dir}"
        )
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        chmod_as_created(tmp, 0o777)
        files = {}
        for name, array in arrays.items():
            file = tmp / f"{name}.npy"
            np.save(file, np.ascontiguousarray(array), allow_pickle=False)
            files[name] = FileEntry(
                sha256=_sha256(file), shape=list(array.shape), dtype=array.dtype.str
            )
        manifest = msgspec.structs.replace(manifest, format_version=FORMAT_VERSION, files=files)
        (tmp / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        _fsync_dir(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_latest:
        set_latest(model_dir, manifest.model_version)
    return final


def set_latest(model_dir: str | Path, version: str) -> None:
    """Point ``model_dir/LATEST`` at ``version`` atomically (write a temp file, then rename)."""
    _check_version_name(version)
    model_dir = Path(model_dir)
    if not (model_dir / version / MANIFEST).is_file():
        raise ArtifactError(f"no model version {version!r} in {model_dir}")
    fd, tmp = tempfile.mkstemp(prefix=".LATEST-", dir=model_dir)
    chmod_as_created(Path(tmp), 0o666)
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, model_dir / LATEST)
    _fsync_dir(model_dir)


def chmod_as_created(path: Path, mode: int) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would under the process umask.

    mkdtemp and mkstemp create owner-only folders and files; the service runs as another user
    (the Dockerfile's ``reco``) and every replica reads the same store, so they could not load
    the model (the event export's files, read by the training job, likewise).
    """
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    path.chmod(mode & ~umask)


def latest_version(model_dir: str | Path) -> str | None:
    """The version ``LATEST`` names, or None when there is no model yet."""
    try:
        text = (Path(model_dir) / LATEST).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


class _Created(msgspec.Struct):
    """The part of a manifest that orders versions."""

    created_at: datetime


def versions_newest_first(model_dir: str | Path) -> list[str]:
    """The versions in ``model_dir`` whose manifest reads, newest first (by ``created_at``);
    what a worker may fall back to when ``LATEST`` does not load."""
    found: list[tuple[datetime, str]] = []
    for path in Path(model_dir).iterdir():
        if not _VERSION_PATTERN.match(path.name) or path.name == LATEST:
            continue
        try:
            created = msgspec.json.decode((path / MANIFEST).read_bytes(), type=_Created)
        except (OSError, msgspec.DecodeError):
            continue
        found.append((created.created_at, path.name))
    return [name for _, name in sorted(found, reverse=True)]


def resolve(model_dir: str | Path, version: str = LATEST) -> Path:
    """The folder of ``version`` (``LATEST`` follows the pointer).

    Raises:
        ArtifactError: there is no such version.
    """
    model_dir = Path(model_dir)
    if version == LATEST:
        found = latest_version(model_dir)
        if found is None:
            raise ArtifactError(f"no model in {model_dir}: {LATEST} is missing; train one first")
        version = found
    _check_version_name(version)
    path = model_dir / version
    if not (path / MANIFEST).is_file():
        raise ArtifactError(f"model version {version!r} has no {MANIFEST} in {model_dir}")
    return path


def load(path: str | Path, *, mmap: bool = True, verify_checksums: bool = True) -> Artifact:
    """Load and check an artifact folder; arrays are memory-mapped read-only by default.

    Raises:
        ArtifactError: a file is missing, corrupted (checksum, shape, dtype, NaN) or of another
            format version. The message names the file and the problem.
    """
    path = Path(path)
    try:
        manifest_bytes = (path / MANIFEST).read_bytes()
        manifest = msgspec.json.decode(manifest_bytes, type=Manifest)
    except FileNotFoundError as e:
        raise ArtifactError(f"{path}: {MANIFEST} is missing") from e
    except msgspec.DecodeError as e:
        raise ArtifactError(f"{path / MANIFEST}: invalid manifest: {e}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {manifest.format_version}, this service reads {FORMAT_VERSION}"
        )
    arrays: dict[str, NDArray[Any]] = {}
    fingerprint = _fingerprint(path, manifest_bytes, manifest)
    # One worker checks a version's checksums; the others find its mark and skip the hashing
    # (reading a million-item version takes seconds). A file changed since then changes the
    # fingerprint (size, mtime), so it is checked again.
    verify_checksums = verify_checksums and _read_mark(path) != fingerprint
    for name, entry in manifest.files.items():
        file = path / f"{name}.npy"
        if not file.is_file():
            raise ArtifactError(f"{file}: listed in the manifest but missing")
        if verify_checksums and _sha256(file) != entry.sha256:
            raise ArtifactError(f"{file}: checksum mismatch, the file is corrupted")
        try:
            array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ArtifactError(f"{file}: unreadable array: {e}") from e
        if list(array.shape) != entry.shape or array.dtype.str != entry.dtype:
            raise ArtifactError(
                f"{file}: shape {array.shape} {array.dtype.str}, manifest says "
                f"{tuple(entry.shape)} {entry.dtype}"
            )
        arrays[name] = array
    _check_arrays(arrays, manifest)
    if verify_checksums:
        _write_mark(path, fingerprint)
    return Artifact(path=path, manifest=manifest, arrays=arrays)


_VERIFIED = ".verified"


def _fingerprint(path: Path, manifest_bytes: bytes, manifest: Manifest) -> str:
    digest = hashlib.sha256(manifest_bytes)
    for name in sorted(manifest.files):
        try:
            st = (path / f"{name}.npy").stat()
        except FileNotFoundError:
            return ""
        digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


def _read_mark(path: Path) -> str | None:
    try:
        return (path / _VERIFIED).read_text().strip()
    except OSError:
        return None


def _write_mark(path: Path, fingerprint: str) -> None:
    # A read-only model store keeps no mark: every worker verifies, which is only slower.
    with contextlib.suppress(OSError):
        (path / _VERIFIED).write_text(fingerprint + "\n")


def pack(
    *,
    user_ids: Sequence[str],
    user_factors: NDArray[np.float32],
    item_ids: Sequence[str],
    item_factors: NDArray[np.float32],
    item_categories: Sequence[str | None],
    popularity: Mapping[str, NDArray[Any]],
    bought_indptr: NDArray[Any],
    bought_items: NDArray[Any],
    item_titles: Sequence[str | None] | None = None,
    item_brands: Sequence[str | None] | None = None,
    item_prices: Sequence[float | None] | None = None,
    user_items: tuple[NDArray[Any], NDArray[Any], NDArray[Any]] | None = None,
    neighbours: tuple[NDArray[Any], NDArray[Any], NDArray[Any]] | None = None,
) -> tuple[dict[str, NDArray[Any]], list[str]]:
    """Arrange a model's parts into the artifact's arrays: rows sorted by id, items re-indexed.

    Args:
        user_ids, user_factors: customers and their vectors, in any order.
        item_ids, item_factors, item_categories: items, their vectors and categories (or None).
        popularity: a popularity score per item for ``"all"`` and for each channel.
        bought_indptr, bought_items: CSR rows (in ``user_ids`` order) of the item indices (in
            ``item_ids`` order) each customer bought.
        item_titles, item_brands, item_prices: optional item metadata, in ``item_ids`` order.
        user_items: optional training matrix as CSR ``(indptr, indices, values)`` in the same
            orders, for request-time fold-in of known customers.
        neighbours: optional sparse item-item component as CSR ``(indptr, indices, weights)``
            over items in ``item_ids`` order (rows: history items; indices: items scored).

    Returns:
        The arrays for ``save`` and the manifest's ``popularity_channels``.
    """
    users, items = encode_ids(user_ids), encode_ids(item_ids)
    bought_items = np.asarray(bought_items)
    if len(bought_items) and (bought_items.min() < 0 or bought_items.max() >= len(items)):
        raise ArtifactError("bought_items holds item indices out of range")
    user_order, item_order = sort_rows(users), sort_rows(items)
    new_item_index = np.empty(len(items), dtype=np.int32)
    new_item_index[item_order] = np.arange(len(items), dtype=np.int32)
    indptr, bought = _reorder_csr(np.asarray(bought_indptr), bought_items, user_order)
    category_names, categories = _vocabulary(item_categories)
    channels = ["all", *sorted(ch for ch in popularity if ch != "all")]
    arrays = {
        "user_ids": users[user_order],
        "user_factors": np.asarray(user_factors, dtype=np.float32)[user_order],
        "item_ids": items[item_order],
        "item_factors": np.asarray(item_factors, dtype=np.float32)[item_order],
        "item_category": categories[item_order],
        "category_names": category_names,
        "item_popularity": np.stack(
            [np.asarray(popularity[ch], dtype=np.float32)[item_order] for ch in channels]
        ),
        "bought_indptr": indptr,
        "bought_items": new_item_index[bought] if len(bought) else bought.astype(np.int32),
    }
    if item_titles is not None:
        arrays["item_titles"] = encode_ids(t or "" for t in item_titles)[item_order]
    if item_brands is not None:
        arrays["brand_names"], brands = _vocabulary(item_brands)
        arrays["item_brand"] = brands[item_order]
    if item_prices is not None:
        prices = [np.nan if p is None else p for p in item_prices]
        arrays["item_price"] = np.asarray(prices, dtype=np.float32)[item_order]
    if user_items is not None:
        indptr_u, indices_u, values_u = (np.asarray(a) for a in user_items)
        new_indptr, gathered = _reorder_csr(indptr_u, np.arange(len(indices_u)), user_order)
        arrays["user_items_indptr"] = new_indptr
        arrays["user_items_indices"] = new_item_index[indices_u[gathered]]
        arrays["user_items_values"] = values_u[gathered].astype(np.float32)
    if neighbours is not None:
        indptr_n, indices_n, weights_n = (np.asarray(a) for a in neighbours)
        if len(indptr_n) != len(items) + 1:
            raise ArtifactError("neighbours_indptr must have one row per item (plus one)")
        if len(indices_n) and (indices_n.min() < 0 or indices_n.max() >= len(items)):
            raise ArtifactError("neighbours_indices holds item rows out of range")
        new_indptr, gathered = _reorder_csr(indptr_n, np.arange(len(indices_n)), item_order)
        arrays["neighbours_indptr"] = new_indptr
        arrays["neighbours_indices"] = new_item_index[indices_n[gathered]]
        arrays["neighbours_weights"] = weights_n[gathered].astype(np.float32)
    return arrays, channels


def _vocabulary(values: Sequence[str | None]) -> tuple[NDArray[np.bytes_], NDArray[np.int32]]:
    """Distinct non-empty values (sorted) and each value's index in them (-1 for none)."""
    names = sorted({v for v in values if v})
    code = {name: i for i, name in enumerate(names)}
    codes = np.array([code[v] if v else -1 for v in values], dtype=np.int32)
    return (encode_ids(names) if names else np.array([], dtype="S1")), codes


def sort_rows(ids: NDArray[np.bytes_]) -> NDArray[np.intp]:
    """The permutation that sorts ``ids``."""
    return np.argsort(ids, kind="stable")


def _reorder_csr(
    indptr: NDArray[Any], indices: NDArray[Any], order: NDArray[np.intp]
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """CSR rows taken in ``order`` (vectorised: no Python loop over millions of customers)."""
    lengths = np.diff(indptr)[order]
    new_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    offsets = np.repeat(indptr[:-1][order] - new_indptr[:-1], lengths)
    gather = offsets + np.arange(new_indptr[-1], dtype=np.int64)
    return new_indptr, indices[gather].astype(np.int32)


def _check_arrays(arrays: Mapping[str, NDArray[Any]], manifest: Manifest) -> None:
    for name, (kind, ndim) in REQUIRED_ARRAYS.items():
        array = arrays.get(name)
        if array is None:
            raise ArtifactError(f"array {name!r} is missing")
        if array.dtype.kind != kind or array.ndim != ndim:
            raise ArtifactError(
                f"array {name!r} must be {ndim}-D of kind {kind!r}, got {array.dtype}"
            )
    users, items = arrays["user_ids"], arrays["item_ids"]
    uf, itf = arrays["user_factors"], arrays["item_factors"]
    if uf.shape[0] != len(users) or itf.shape[0] != len(items):
        raise ArtifactError("factor rows do not match the number of ids")
    if uf.shape[1] != itf.shape[1]:
        raise ArtifactError(
            f"user and item factors differ in dimension: {uf.shape[1]} vs {itf.shape[1]}"
        )
    for name, ids in (("user_ids", users), ("item_ids", items)):
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise ArtifactError(f"{name} must be unique and sorted")
    for name in ("user_factors", "item_factors"):
        if not bool(np.isfinite(arrays[name]).all()):
            raise ArtifactError(f"{name} contains NaN or infinite values")
    pop = arrays["item_popularity"]
    if pop.shape != (len(manifest.popularity_channels), len(items)):
        raise ArtifactError(
            f"item_popularity has shape {pop.shape}, expected "
            f"({len(manifest.popularity_channels)}, {len(items)})"
        )
    category = arrays["item_category"]
    if category.shape != (len(items),) or (
        len(category) and (category.min() < -1 or category.max() >= len(arrays["category_names"]))
    ):
        raise ArtifactError("item_category must hold one valid category index (or -1) per item")
    for name, (kind, ndim) in OPTIONAL_ARRAYS.items():
        array = arrays.get(name)
        if array is not None and (array.dtype.kind != kind or array.ndim != ndim):
            raise ArtifactError(
                f"array {name!r} must be {ndim}-D of kind {kind!r}, got {array.dtype}"
            )
    for name in ("item_titles", "item_brand", "item_price"):
        if name in arrays and len(arrays[name]) != len(items):
            raise ArtifactError(f"{name} must hold one value per item")
    if "user_items_indptr" in arrays and (
        len(arrays["user_items_indptr"]) != len(users) + 1
        or len(arrays["user_items_indices"]) != len(arrays["user_items_values"])
    ):
        raise ArtifactError("user_items arrays do not match user_ids")
    if (
        "item_brand" in arrays
        and len(arrays["item_brand"])
        and (arrays["item_brand"].max() >= len(arrays.get("brand_names", ())))
    ):
        raise ArtifactError("item_brand holds brand indices out of range")
    if problem := check_index(arrays, len(items), itf.shape[1], itf):
        raise ArtifactError(problem)
    if problem := check_neighbours(arrays, len(items)):
        raise ArtifactError(problem)
    if problem := check_similar(arrays, len(items)):
        raise ArtifactError(problem)
    if problem := check_customer_table(arrays, len(users), len(items)):
        raise ArtifactError(problem)
    if problem := _check_foldin(arrays, len(items), itf.shape[1]):
        raise ArtifactError(problem)
    if (manifest.neighbours is None) != ("neighbours_indptr" not in arrays):
        raise ArtifactError("the manifest's neighbours and the neighbours_* arrays go together")
    if manifest.ann is not None and "ann_centroids" not in arrays:
        raise ArtifactError("the manifest's ann calibrates an index the arrays do not hold")
    indptr, bought = arrays["bought_indptr"], arrays["bought_items"]
    if len(indptr) != len(users) + 1 or (len(indptr) and indptr[-1] != len(bought)):
        raise ArtifactError("bought_indptr does not match user_ids and bought_items")
    if len(bought) and (bought.min() < 0 or bought.max() >= len(items)):
        raise ArtifactError("bought_items holds item indices out of range")


def _check_foldin(arrays: Mapping[str, NDArray[Any]], n_items: int, dim: int) -> str | None:
    present = [name for name in FOLDIN_ARRAYS if name in arrays]
    if not present:
        return None
    if len(present) != len(FOLDIN_ARRAYS):
        return "the fold-in's arrays go together: foldin_projected and foldin_kernel"
    if arrays["foldin_projected"].shape != (n_items, dim) or arrays["foldin_kernel"].shape != (
        n_items,
        n_items,
    ):
        return "foldin_projected must be items x factors and foldin_kernel items x items"
    return None


def _check_version_name(version: str) -> None:
    if not _VERSION_PATTERN.match(version) or version == LATEST:
        raise ArtifactError(f"invalid model version name {version!r}")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
