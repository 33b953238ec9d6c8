"""Erased customers: finding the suppression files that lie with the event files, and dropping
those customers' events before anything is fitted.

A suppression file (``_suppressions.json``, written by ``export-events``) holds the SHA-256 of
every erased customer id: ``{"sha256": ["<hex>", ...]}``. The files read are:

- the one ``--suppressions`` names, which must exist;
- every ``_suppressions.json`` under a folder given to ``--events``, at any depth;
- for every event file, the one in its folder and, while that folder is a partition
  (``date=2026-09-02``), in the folder above it: the exporter's layout, so a part file or a
  partition given alone is still filtered.

Reading more files than needed can only drop more events; missing one would train on an erased
customer, so a malformed file is an error, never skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from service.store.erasure import customer_hash
from training.errors import TrainingError
from training.export import SUPPRESSIONS_FILE
from training.loaders import event_files

log = logging.getLogger(__name__)

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class Suppressions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The content of a suppression file."""

    sha256: list[Sha256]


def suppression_files(events: Iterable[str | Path], named: str | Path | None = None) -> list[Path]:
    """The suppression files that apply to the event paths ``events`` (see the module's rule).

    Raises:
        TrainingError: ``named`` does not exist.
    """
    found: list[Path] = []
    if named is not None:
        if not Path(named).is_file():
            raise TrainingError(f"{named}: no such suppressions file")
        found.append(Path(named))
    for path in map(Path, events):
        if path.is_dir():
            found += sorted(path.rglob(SUPPRESSIONS_FILE))
    for file in event_files(events):
        folder = file.parent
        found.append(folder / SUPPRESSIONS_FILE)
        while "=" in folder.name:
            folder = folder.parent
            found.append(folder / SUPPRESSIONS_FILE)
    unique = dict.fromkeys(p.resolve() for p in found if p.is_file())
    return list(unique)


def read_hashes(files: Iterable[Path]) -> set[str]:
    """The erased customers' hashes in ``files``.

    Raises:
        TrainingError: a file is not a suppression file (the message names it).
    """
    hashes: set[str] = set()
    for file in files:
        try:
            hashes.update(msgspec.json.decode(file.read_bytes(), type=Suppressions).sha256)
        except (msgspec.DecodeError, OSError) as e:
            raise TrainingError(
                f'{file}: not a suppressions file ({e}); expected {{"sha256": ["<hex>", ...]}}'
            ) from e
        log.info("read %s", file)
    return hashes


def drop_suppressed(events: pa.Table, hashes: set[str]) -> pa.Table:
    """``events`` without the events of erased customers (given as SHA-256 of their ids)."""
    if not hashes:
        return events
    customers = pc.unique(events["customer_id"]).to_pylist()
    erased = [c for c in customers if customer_hash(c) in hashes]
    if not erased:
        return events
    kept = events.filter(pc.invert(pc.is_in(events["customer_id"], value_set=pa.array(erased))))
    log.info(
        "dropped %d events of %d erased customer(s)", events.num_rows - kept.num_rows, len(erased)
    )
    return kept
