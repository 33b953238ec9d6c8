"""Freed heap pages go back to the system after a model load (glibc's malloc_trim)."""

from __future__ import annotations

import subprocess
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


_ARENAS_SCRIPT = """
import ctypes, sys, threading
from service.memory import limit_arenas
if sys.argv[1] == "limited":
    assert limit_arenas(1)
barrier = threading.Barrier(4)
kept = []
def work():
    blocks = [bytearray(512) for _ in range(2000)]  # small blocks: from the thread's arena
    barrier.wait()  # all four threads allocating at once
    kept.append(blocks)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" section per arena, on stderr
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only"
)
def test_threads_share_the_capped_arenas() -> None:
    """Each allocating thread gets an arena of its own, whose freed memory it keeps; capped,
    they share (a worker's offload threads grew it by tens of MiB)."""

    def arenas(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _ARENAS_SCRIPT, mode], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        return done.stderr.count("Arena ")

    assert arenas("default") > 1
    assert arenas("limited") == 1
