"""The model version a worker serves now, and how it is swapped for a new one without downtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from service import artifact
from service.ann import AnnConfig
from service.errors import ArtifactError, ModelUnavailable, StoreUnavailable
from service.memory import release_free_memory
from service.ranking import FactorModel

log = logging.getLogger(__name__)


class LiveModel:
    """Holds the current ``FactorModel``; ``refresh`` loads a new LATEST and swaps it in.

    The swap is one reference assignment: a request that already holds the old model finishes on
    it, the next request gets the new one. A version that fails to load is never swapped in; the
    old one keeps serving and the error is kept for the readiness check until ``LATEST`` names a
    version that loads or the served one again (a rollback). Polling does not load a failed
    version again unless its files change (repaired in place); a reload asked for does.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        verify_checksums: bool = True,
        ann: AnnConfig | None = None,
    ) -> None:
        """Serve models from ``model_dir`` (nothing is loaded until ``refresh``)."""
        self.model_dir = Path(model_dir)
        self.verify_checksums = verify_checksums
        self.ann = ann
        self.current: FactorModel | None = None
        self.error: str | None = None
        # The version that failed and its files' sizes and times then (``_files_of``).
        self._failed: tuple[str, tuple[tuple[str, int, int], ...]] | None = None
        self._lock = asyncio.Lock()

    @property
    def version(self) -> str | None:
        """The version served now (None before a model loads)."""
        return self.current.version if self.current else None

    def served_files_gone(self) -> bool:
        """Whether the served version's folder was removed: this worker still serves it from
        memory, but a worker started now could not load it."""
        version = self.version
        return version is not None and not (self.model_dir / version / artifact.MANIFEST).is_file()

    def get(self) -> FactorModel:
        """The model to answer with.

        Raises:
            ModelUnavailable: no model could be loaded (the message says why).
        """
        model = self.current
        if model is None:
            raise ModelUnavailable(self.error or "no model loaded yet")
        return model

    async def refresh(self, *, retry_failed: bool = False) -> bool:
        """Load the version ``LATEST`` names if it differs from the one served; True if swapped.

        A version that failed before is loaded again when ``retry_failed`` (a reload asked for)
        or when its files changed since. Loading (reading and checksumming files) runs in a
        thread, off the event loop.
        """
        async with self._lock:
            version = artifact.latest_version(self.model_dir)
            if version is None:
                if self.current is None:
                    self.error = f"no model in {self.model_dir}: train one first"
                return False
            served = self.version
            if version == served:
                # LATEST names what is served (rolled back to it): an earlier failure is history.
                self.error, self._failed = None, None
                return False
            files = await asyncio.to_thread(self._files_of, version)
            if not retry_failed and self._failed == (version, files):
                return False
            try:
                model = await asyncio.to_thread(self._load, version)
            except Exception as e:  # any unreadable artifact: keep serving the old one
                reason = str(e) if isinstance(e, ArtifactError) else f"{type(e).__name__}: {e}"
                self._failed, self.error = (version, files), f"model {version}: {reason}"
                if served is not None:
                    log.error("model %s not loaded, still serving %s: %s", version, served, e)
                    return False
                # A worker starting (or replacing one that died) has no old one to keep: it
                # serves what its siblings still serve, the newest version that loads.
                log.error("model %s not loaded: %s", version, e)
                return await self._fall_back(skip=version)
            self.current, self.error, self._failed = model, None, None
            log.info("serving model %s (%d items)", model.version, model.n_items)
            if served is not None:
                # The replaced model's own arrays, freed once no request holds it any more.
                await asyncio.to_thread(release_free_memory)
            return True

    async def _fall_back(self, skip: str) -> bool:
        """Load the newest version other than ``skip`` that loads; True if one did."""
        for version in await asyncio.to_thread(artifact.versions_newest_first, self.model_dir):
            if version == skip:
                continue
            try:
                model = await asyncio.to_thread(self._load, version)
            except Exception as e:
                log.error("model %s not loaded either: %s", version, e)
                continue
            self.current = model
            self.error = f"{self.error}; serving {version}, the newest version that loads"
            log.warning("serving model %s (%d items) instead", version, model.n_items)
            return True
        return False

    async def watch(self, interval_seconds: float) -> None:
        """Poll ``LATEST`` forever (run as a background task; cancelled on shutdown)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.refresh()
            except Exception:  # never let the watcher die: the next poll may succeed
                log.exception("model refresh failed")

    async def follow(self, reloads: Callable[[], Awaitable[int]], interval_seconds: float) -> None:
        """Load ``LATEST`` whenever ``reloads()`` (the count of reload requests, kept in Redis)
        changes: a reload asked of one worker reaches the others within ``interval_seconds``,
        with polling off too. Runs until cancelled; an unreachable Redis skips a round."""
        seen: int | None = None
        while True:
            try:
                count = await reloads()
                if seen is not None and count != seen:
                    await self.refresh(retry_failed=True)
                seen = count
            except StoreUnavailable:
                pass
            except Exception:  # never let the follower die: the next round may succeed
                log.exception("model reload failed")
            await asyncio.sleep(interval_seconds)

    def _files_of(self, version: str) -> tuple[tuple[str, int, int], ...]:
        """Each file of ``version``'s folder with its size and modification time: a few stats,
        so a poll notices a version repaired in place without reading it again."""
        try:
            entries = sorted(artifact.resolve(self.model_dir, version).iterdir())
            return tuple((p.name, (st := p.stat()).st_size, st.st_mtime_ns) for p in entries)
        except (OSError, ArtifactError):
            return ()

    def _load(self, version: str) -> FactorModel:
        path = artifact.resolve(self.model_dir, version)
        loaded = artifact.load(path, verify_checksums=self.verify_checksums)
        model = FactorModel(loaded, ann=self.ann)
        release_free_memory()  # the load's temporaries, kept by the C heap otherwise
        return model
