"""Giving the C heap's free pages back to the system after a model is loaded, and keeping the
heap from growing an arena per thread.

Loading a model allocates and frees large temporaries (float64 copies of the factors, the Gram
matrix and its inverse: 22 MiB each for a blend on movielens-100k). glibc keeps freed memory in
the process's heap for reuse, and after the first large free it raises its threshold for handing
big blocks straight back, so each worker kept about 87 MiB it no longer used (movielens-100k
blend: 113.5 MiB of private memory after loading, 26.3 MiB after ``malloc_trim``). Elsewhere
(musl, macOS) there is no ``malloc_trim`` and this does nothing.

glibc also gives each thread that allocates its own arena (up to 8 per CPU), and what a thread
frees stays in its arena. A worker runs its heavy work in threads (service/offload.py, an offer
plan, a store's stock mask), so each such thread's arena kept what its work had used: at 100,000
items 2 s of the benchmark's offers at 8 connections grew a worker by 42 MiB of private memory
with the default arenas, 25 MiB with at most 2 and 21 MiB with 1. ``limit_arenas`` caps them
(``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX`` variable would, but from inside the
worker); the threads are few and short-lived, so they hardly ever wait for one another's
allocations.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _glibc(symbol: str) -> Callable[..., int] | None:
    """``symbol`` of glibc, or None (another C library): glibc by its soname, else the symbols
    the process already has (no ``find_library``: it runs ldconfig in a subprocess)."""
    for name in ("libc.so.6", None):
        try:
            return getattr(ctypes.CDLL(name), symbol)  # type: ignore[no-any-return]
        except (OSError, AttributeError):
            continue
    return None


def _malloc_trim() -> Callable[..., int] | None:
    return _glibc("malloc_trim")


_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = 2) -> bool:
    """Let the C heap grow at most ``arenas`` arenas; True when the C library could (glibc)."""
    mallopt = _glibc("mallopt")
    return mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; True when the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
