"""Model versions on disk: keep the newest few, and what ``LATEST`` names; remove the rest.

A retailer retraining nightly writes a version a day, and a large catalogue's version holds
gigabytes (factors, the ANN index's copy of them, the similar-items table), so without a
retention rule ``MODEL_DIR`` fills its disk. ``fit`` prunes after publishing (``--keep-versions``)
and ``python -m training prune`` does it on its own, e.g. from cron.

What is never removed: the version ``LATEST`` names, the ``keep`` newest versions (by their
manifest's ``created_at``: the ones a rollback or a worker's fallback would turn to), and anything
that is not a readable version (a folder without a manifest may be one being copied in).
A version goes in two steps: it is renamed to a hidden name first, so a service worker looking
for a version to load (``artifact.versions_newest_first``) never finds it half deleted, then
deleted. A worker that still serves a removed version keeps its memory-mapped files (Linux
frees them when the last mapping goes); its readiness warns that the folder is gone.
Leftovers of interrupted work are removed too: a prune's own interrupted deletion (``.pruned-*``)
at once, and, once untouched for ``STALE_AFTER_S``, an artifact folder a killed ``fit`` was
writing (``.tmp-*``) and a ``LATEST`` being written (``.LATEST-*``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import msgspec

from service import artifact

log = logging.getLogger(__name__)

# Versions ``fit`` keeps by default: LATEST and four to roll back to.
DEFAULT_KEEP = 5
# Age after which a hidden leftover is taken as abandoned: far longer than writing the largest
# artifact takes (a million items: seconds), so a concurrent fit's folder is never touched.
STALE_AFTER_S = 6 * 3600
_WRITING = (".tmp-", ".LATEST-")
_PRUNING = ".pruned-"


class PruneReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a prune kept and removed."""

    kept: list[str]
    removed: list[str]
    leftovers_removed: list[str]
    bytes_freed: int


def prune(model_dir: str | Path, keep: int, *, dry_run: bool = False) -> PruneReport:
    """Remove the versions of ``model_dir`` beyond the ``keep`` newest, never ``LATEST``'s.

    ``keep`` must be at least 1. With ``dry_run`` nothing is removed: the report says what would be.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1 (LATEST and the versions to roll back to)")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no model folder {model_dir}")
    versions = artifact.versions_newest_first(model_dir)
    kept = set(versions[:keep])
    latest = artifact.latest_version(model_dir)
    if latest is not None:
        kept.add(latest)
    removed, freed = [], 0
    for version in versions:
        if version in kept:
            continue
        path = model_dir / version
        size = _size(path)
        if not dry_run and not _remove(path, model_dir / f".pruned-{version}"):
            continue
        removed.append(version)
        freed += size
    leftovers = []
    for path in _stale_leftovers(model_dir):
        size = _size(path)
        if not dry_run and not _remove(path, None):
            continue
        leftovers.append(path.name)
        freed += size
    return PruneReport(
        kept=[v for v in versions if v in kept],
        removed=removed,
        leftovers_removed=leftovers,
        bytes_freed=freed,
    )


def _remove(path: Path, hidden: Path | None) -> bool:
    """Delete ``path`` (first renamed to ``hidden``, when given); False, logged, when it fails."""
    try:
        if hidden is not None:
            os.rename(path, hidden)
            path = hidden
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
        return False
    return True


def _stale_leftovers(model_dir: Path) -> list[Path]:
    """Hidden leftovers: interrupted prunes', and interrupted writes' untouched for
    ``STALE_AFTER_S``."""
    now = time.time()
    found = []
    for path in sorted(model_dir.iterdir()):
        if path.name.startswith(_PRUNING):
            found.append(path)
            continue
        if not path.name.startswith(_WRITING):
            continue
        try:
            newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
        except OSError:  # removed meanwhile by whoever owns it
            continue
        if now - newest >= STALE_AFTER_S:
            found.append(path)
    return found


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0
