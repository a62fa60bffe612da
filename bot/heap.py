"""The memory settings of a long-running bot process: the garbage collector and malloc.

Python's cycle collector starts a young-generation pass every 700 net allocations, and each
full pass walks every live object. A bot holds a large, stable heap after start-up (PTB,
SQLAlchemy, Jinja's compiled templates, the content catalog), and each update leaves
short-lived cycles (coroutines, futures, tracebacks). Measured in bench/throughput.py, the
collector took about 18% of a /topic update's time with the defaults. Two changes:

* after start-up, `gc.freeze()` moves everything alive into the permanent generation, so
  later passes never walk it again (it is never garbage: modules, templates, catalog);
* a young generation of 10,000 allocations instead of 700: a pass per ~50 updates instead of
  ~10. The extra garbage waiting for a pass is a few MB at most (bench/memory.py).

With the collector rarely doing a full pass, garbage in reference cycles that lived through
two young passes (SQL statements built per call: a bind parameter and its comparator point at
each other) piles up in the old generation until one comes, in bench/memory.py's load about
every 15,000 updates. Python's allocator keeps an arena while any object in it lives, so each
such pile, freed among objects that stay, leaves arenas behind: the arena count ratchets up
with the load. `release_forever` runs a full pass every 10 seconds (about 3 ms over the
objects not frozen), so the pile never grows past a few seconds' worth. Then it calls glibc's
`malloc_trim(0)`, which gives every whole free page of every malloc arena back to the
system; glibc by itself returns memory only from the top of an arena. Off glibc (musl,
macOS) only the pass runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

YOUNG_THRESHOLD = 10_000
RELEASE_SECONDS = 10.0


def settle() -> None:
    """Call once the process is up (post_init), before the first update."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:  # the symbols already loaded into this process, libc's among them
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


async def release_forever(interval: float = RELEASE_SECONDS) -> None:
    """Every `interval` seconds, until cancelled: collect the old generation's garbage, then
    give malloc's free pages back to the system."""
    trim = malloc_trim()
    while True:
        await asyncio.sleep(interval)
        gc.collect()
        if trim is not None:
            trim(0)  # ctypes lets other threads run meanwhile
