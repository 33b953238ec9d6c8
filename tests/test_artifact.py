from __future__ import annotations

import json
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service import artifact
from service.errors import ArtifactError
from tests.builders import checkerboard_artifact


def small_parts(**overrides: object) -> dict[str, object]:
    """Three customers and four items given in unsorted id order."""
    parts: dict[str, object] = {
        "user_ids": ["carol", "alice", "bob"],
        "user_factors": np.array([[3, 3], [1, 1], [2, 2]], np.float32),
        "item_ids": ["d", "b", "a", "c"],
        "item_factors": np.array([[4, 0], [2, 0], [1, 0], [3, 0]], np.float32),
        "item_categories": ["x", None, "y", "x"],
        "popularity": {"all": np.array([40, 20, 10, 30]), "web": np.array([4, 2, 1, 3])},
        # carol bought d and a; alice nothing; bob bought c.
        "bought_indptr": np.array([0, 2, 2, 3]),
        "bought_items": np.array([0, 2, 3]),
    }
    parts.update(overrides)
    return parts


def manifest(version: str = "v1", channels: list[str] | None = None) -> artifact.Manifest:
    return artifact.Manifest(
        format_version=artifact.FORMAT_VERSION,
        model_version=version,
        algorithm="test",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        popularity_channels=channels or ["all", "web"],
    )


def test_pack_sorts_rows_by_id_and_keeps_every_row_with_its_data() -> None:
    arrays, channels = artifact.pack(**small_parts())  # type: ignore[arg-type]
    assert channels == ["all", "web"]
    assert arrays["user_ids"].tolist() == [b"alice", b"bob", b"carol"]
    assert arrays["user_factors"][:, 0].tolist() == [1, 2, 3]
    assert arrays["item_ids"].tolist() == [b"a", b"b", b"c", b"d"]
    assert arrays["item_factors"][:, 0].tolist() == [1, 2, 3, 4]
    assert arrays["item_popularity"].tolist() == [[10, 20, 30, 40], [1, 2, 3, 4]]
    names = [n.decode() for n in arrays["category_names"]]
    assert [names[c] if c >= 0 else None for c in arrays["item_category"]] == ["y", None, "x", "x"]
    indptr, bought = arrays["bought_indptr"], arrays["bought_items"]
    by_user = {
        arrays["user_ids"][u].decode(): sorted(
            arrays["item_ids"][bought[indptr[u] : indptr[u + 1]]]
        )
        for u in range(3)
    }
    assert by_user == {"alice": [], "bob": [b"c"], "carol": [b"a", b"d"]}


def test_save_then_load_round_trips_memory_mapped_arrays(tmp_path: Path) -> None:
    arrays, channels = artifact.pack(**small_parts())  # type: ignore[arg-type]
    path = artifact.save(tmp_path, manifest(channels=channels), arrays)
    assert artifact.latest_version(tmp_path) == "v1"
    loaded = artifact.load(artifact.resolve(tmp_path))
    assert loaded.path == path
    assert loaded.version == "v1"
    for name, array in arrays.items():
        assert np.array_equal(loaded.arrays[name], array), name
    assert isinstance(loaded.arrays["item_factors"], np.memmap)
    assert set(loaded.manifest.files) == set(arrays)
    # Nothing pickled: every file loads with pickle disabled.
    for file in path.glob("*.npy"):
        np.load(file, allow_pickle=False)


def test_a_new_version_replaces_latest_and_keeps_the_old_one(tmp_path: Path) -> None:
    checkerboard_artifact(tmp_path, version="v1")
    checkerboard_artifact(tmp_path, version="v2")
    assert artifact.latest_version(tmp_path) == "v2"
    assert artifact.load(artifact.resolve(tmp_path, "v1")).version == "v1"
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".LATEST-*"))


@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)]
)
def test_a_saved_version_has_the_modes_of_the_umask(
    tmp_path: Path, umask: int, folder: int, file: int
) -> None:
    """The service runs as another user than training: what training writes is readable by it
    as far as the umask allows, not owner-only as temporary folders and files are made."""
    before = os.umask(umask)
    try:
        path = checkerboard_artifact(tmp_path / "models", version="v1")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == folder
    assert stat.S_IMODE((tmp_path / "models" / artifact.LATEST).stat().st_mode) == file
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {file}


def test_saving_an_existing_version_is_refused(tmp_path: Path) -> None:
    checkerboard_artifact(tmp_path, version="v1")
    with pytest.raises(ArtifactError, match="already exists"):
        checkerboard_artifact(tmp_path, version="v1")


def test_readers_never_see_a_partial_latest(tmp_path: Path) -> None:
    """While versions are published, every read of LATEST names a complete artifact."""
    checkerboard_artifact(tmp_path, version="v0")
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            version = artifact.latest_version(tmp_path)
            assert version is not None
            seen.append(artifact.load(artifact.resolve(tmp_path, version)).version)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 8):
        checkerboard_artifact(tmp_path, version=f"v{i}")
    stop.set()
    reader.join()
    assert seen and set(seen) <= {f"v{i}" for i in range(8)}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "invalid manifest"),
        (lambda p: (p / "item_factors.npy").unlink(), "listed in the manifest but missing"),
        (lambda p: _flip_last_byte(p / "item_factors.npy"), "checksum mismatch"),
        (lambda p: _set_manifest(p, format_version=99), "format_version 99"),
        (lambda p: _truncate(p / "user_ids.npy"), "checksum mismatch"),
    ],
)
def test_damaged_artifacts_fail_with_a_clear_error(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = checkerboard_artifact(tmp_path)
    damage(path)
    with pytest.raises(ArtifactError, match=message):
        artifact.load(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"foldin_projected": np.zeros((4, 2), np.float32)}, "go together"),
        (
            {
                "foldin_projected": np.zeros((4, 3), np.float32),
                "foldin_kernel": np.zeros((4, 4), np.float32),
            },
            "items x factors",
        ),
        (
            {
                "foldin_projected": np.zeros((4, 2), np.float32),
                "foldin_kernel": np.zeros((4, 3), np.float32),
            },
            "items x items",
        ),
    ],
)
def test_fold_in_arrays_that_do_not_fit_the_model_are_refused(
    tmp_path: Path, extra: dict[str, np.ndarray], message: str
) -> None:
    arrays, channels = artifact.pack(**small_parts())  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match=message):
        artifact.save(tmp_path, manifest(channels=channels), {**arrays, **extra})


def test_unreadable_array_is_reported_even_without_checksums(tmp_path: Path) -> None:
    path = checkerboard_artifact(tmp_path)
    _truncate(path / "item_factors.npy")
    with pytest.raises(ArtifactError, match="item_factors"):
        artifact.load(path, verify_checksums=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"item_factors": np.full((4, 2), np.nan, np.float32)}, "NaN"),
        ({"user_factors": np.ones((3, 3), np.float32)}, "differ in dimension"),
        ({"user_ids": ["a", "a", "b"]}, "unique and sorted"),
        ({"bought_items": np.array([0, 2, 9])}, "out of range"),
    ],
)
def test_pack_and_save_refuse_arrays_that_break_the_contract(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    def pack_and_save() -> None:
        arrays, channels = artifact.pack(**small_parts(**overrides))  # type: ignore[arg-type]
        artifact.save(tmp_path, manifest(channels=channels), arrays)

    with pytest.raises(ArtifactError, match=message):
        pack_and_save()
    assert artifact.latest_version(tmp_path) is None


def test_resolve_without_any_model_says_to_train_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="train one first"):
        artifact.resolve(tmp_path)


@pytest.mark.parametrize("name", ["../etc", "LATEST", "", "a/b"])
def test_version_names_cannot_escape_the_model_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactError, match="invalid model version"):
        artifact.set_latest(tmp_path, name)
    if name != "LATEST":  # resolve("LATEST") follows the pointer instead
        with pytest.raises(ArtifactError, match="invalid model version"):
            artifact.resolve(tmp_path, name)


def _flip_last_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-7])


def _set_manifest(path: Path, **fields: object) -> None:
    doc = json.loads((path / "manifest.json").read_text())
    doc.update(fields)
    (path / "manifest.json").write_text(json.dumps(doc))


def test_item_metadata_is_optional_and_follows_the_item_order(tmp_path: Path) -> None:
    parts = small_parts(
        item_titles=["Dee", "Bee", None, "Cee"],
        item_brands=["acme", None, "zeta", "acme"],
        item_prices=[4.0, 2.0, None, 3.0],
    )
    arrays, channels = artifact.pack(**parts)  # type: ignore[arg-type]
    loaded = artifact.load(artifact.save(tmp_path, manifest(channels=channels), arrays))
    a = loaded.arrays
    assert a["item_titles"].tolist() == [b"", b"Bee", b"Cee", b"Dee"]
    brands = [a["brand_names"][b].decode() if b >= 0 else None for b in a["item_brand"]]
    assert brands == ["zeta", None, "acme", "acme"]
    assert np.isnan(a["item_price"][0])
    assert a["item_price"][1:].tolist() == [2.0, 3.0, 4.0]
    assert loaded.manifest.fold_in == artifact.FoldIn()  # defaults when a writer gives none


def test_metadata_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    arrays, channels = artifact.pack(**small_parts())  # type: ignore[arg-type]
    arrays["item_price"] = np.ones(3, np.float32)
    with pytest.raises(ArtifactError, match="one value per item"):
        artifact.save(tmp_path, manifest(channels=channels), arrays)


def test_checksums_are_verified_once_per_version_and_again_after_a_change(tmp_path: Path) -> None:
    path = checkerboard_artifact(tmp_path)
    artifact.load(path)
    assert (path / ".verified").is_file()
    # Same size, new content and mtime: the fingerprint changes, so the checksum runs again.
    time.sleep(0.05)  # past the file system's timestamp granularity
    _flip_last_byte(path / "item_factors.npy")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        artifact.load(path)
