"""Freed heap pages go back to the system after a model load (glibc's malloc_trim)."""

from __future__ import annotations

import sys

import pytest

from service.memory import _malloc_trim, release_free_memory


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only"
)
def test_freed_heap_memory_below_a_live_block_is_given_back() -> None:
    """Blocks under the mmap threshold come from the heap; freed below a block still alive,
    glibc keeps their pages (the heap only shrinks from its top) until ``malloc_trim``."""
    blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MiB in heap blocks, touched
    keep = bytearray(64 * 1024)  # above them: the heap's top stays in use
    del blocks
    before = _resident_mib()
    assert release_free_memory()
    after = _resident_mib()
    assert before - after > 50, (before, after)
    del keep
