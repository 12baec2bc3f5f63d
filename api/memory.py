"""Memory that stays bounded over a long day: glibc's allocator, tamed.

Under repeated bursts the service's resident memory grew without a plateau (+107 MB a burst of 48 detections,
nothing returned when idle): not a leak in Python, but glibc's malloc giving each of the many threads that
touch tensors (request handlers, the scoring worker, torch's own) an arena of its own, and keeping freed pages.
Two calls fix it where glibc is the allocator (elsewhere both do nothing):

- `limit_arenas(n)` (mallopt M_ARENA_MAX) before the server starts its threads: at most n arenas;
- `trim()` (malloc_trim) when the scoring queue runs empty: freed pages go back to the system.

`benchmarks/soak.py` measures the resident memory over repeated bursts with and without them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("resynth.api")
M_ARENA_MAX = -8  # glibc's mallopt parameter


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


LIBC = _libc()


def limit_arenas(n: int) -> bool:
    """At most n malloc arenas from now on (0: glibc's default, unchanged). Whether the setting took."""
    if n <= 0 or LIBC is None:
        return False
    ok = bool(LIBC.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(n)))
    if not ok:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused", n)
    return ok


def trim() -> bool:
    """Give freed heap pages back to the system; whether any were."""
    return bool(LIBC.malloc_trim(ctypes.c_size_t(0))) if LIBC is not None else False
