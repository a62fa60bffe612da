"""`chuyende run` that reports where its memory is, for bench/memory.py --heap.

    HEAP_FILE=heap.jsonl python bench/heap_probe_bot.py

Each SIGUSR2 appends one JSON line to HEAP_FILE, taken in the main thread (where Python runs
signal handlers, between two bytecodes). Unlike tracemalloc it costs nothing between
signals, so the load runs at full speed and the figures are those of a real run. A line
holds:

* ``rss_kb``: VmRSS;
* ``py_allocated`` / ``py_arenas``: bytes in live blocks of Python's small-object allocator
  and bytes of its arenas (from ``sys._debugmallocstats``): their gap is fragmentation;
* ``malloc_in_use`` / ``malloc_free``: glibc's ``mallinfo2`` over all arenas, i.e. larger
  Python objects and C libraries; the free part is held by malloc, not returned;
* ``arenas``: per malloc arena (glibc gives each thread one, up to 8 per core), its
  bytes from the system and bytes free; ``threads``: the process's threads now;
* ``sqlite``: what SQLite's allocator holds (page caches, schemas, prepared statements);
* ``objects``: gc-tracked objects created since start-up's ``gc.freeze()`` (frozen ones are
  not listed by ``gc.get_objects``), and ``types``: the 40 most common of them.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]


def _pymalloc() -> dict[str, int]:
    """Parse sys._debugmallocstats, which writes to the C-level stderr only."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")

    def number(pattern: str) -> int:
        found = re.search(pattern + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else -1

    return {
        "py_allocated": number(r"# bytes in allocated blocks"),
        "py_arenas": number(r"arenas \* \d+ bytes/arena"),
    }


def main() -> None:
    target = Path(os.environ["HEAP_FILE"])
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _Mallinfo2
    try:
        sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    except (OSError, TypeError):
        sqlite = None

    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]

    def arenas() -> list[tuple[int, int, int]]:
        """Per malloc arena (glibc's malloc_info): bytes from the system, bytes free."""
        with tempfile.NamedTemporaryFile(suffix=".xml") as out:
            stream = libc.fopen(out.name.encode(), b"w")
            libc.malloc_info(0, stream)
            libc.fclose(stream)
            text = Path(out.name).read_text()
        rows = []
        for nr, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
            system = re.search(r'<system type="current" size="(\d+)"', body)
            free = re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body)
            rows.append((int(nr), int(system.group(1)) if system else -1,
                         sum(int(x) for x in free)))
        return rows

    def probe(_signum, _frame) -> None:
        info = libc.mallinfo2()
        types = collections.Counter(type(o).__name__ for o in gc.get_objects())
        status = Path("/proc/self/status").read_text()
        rss = int(re.search(r"VmRSS:\s*(\d+)", status).group(1))
        line = {
            "t": time.time(),
            "rss_kb": rss,
            **_pymalloc(),
            "malloc_in_use": info.uordblks + info.hblkhd,
            "malloc_free": info.fordblks,
            "sqlite": sqlite.sqlite3_memory_used() if sqlite else -1,
            "objects": sum(types.values()),
            "types": types.most_common(40),
            "arenas": arenas(),
            "threads": len(os.listdir("/proc/self/task")),
        }
        with target.open("a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR2, probe)
    from bot.cli import app

    app(["run"])


if __name__ == "__main__":
    main()
