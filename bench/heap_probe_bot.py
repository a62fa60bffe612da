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
  not listed by ``gc.get_objects``), and ``types``: the 40 most common of them;
* ``big``: every malloc block of at least 256 kB that glibc gave its own mmap (found by
  walking the process's anonymous mappings) or that is in use in the main arena's heap: its
  address, its size, and what a sample of its
  8-byte words point at (the types of gc-tracked objects, or ``ptr`` for another address,
  ``zero`` or ``other``), so a block that appears can be told apart: a Python list's or
  set's table points at objects, a C library's buffer does not.
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


_IS_MMAPPED = 0x2
_BIG = 256 * 1024
_SAMPLE_WORDS = 512
_WINDOW = 1 << 20


def _anonymous_mappings() -> list[tuple[int, int]]:
    """Start and end of each private read-write mapping without a file."""
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[1] == "rw-p":  # no path: anonymous
            start, end = (int(x, 16) for x in fields[0].split("-"))
            spans.append((start, end))
    return spans


def _read(mem: int, address: int, size: int) -> bytes:
    """Bytes of this process's memory. Read through /proc/self/mem, where a mapping that
    another thread unmapped meanwhile is an error instead of a crash."""
    try:
        return os.pread(mem, size, address)
    except OSError:
        return b""


def _word(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 8], "little")


def _mmapped_chunks(mem: int) -> list[tuple[int, int]]:
    """(user address, size) of glibc's mmapped chunks of at least 256 kB. The kernel merges
    adjacent anonymous mappings (Python's arenas, thread stacks, other chunks), so every page
    is tried for a chunk header: prev_size 0, the IS_MMAPPED bit, a page-multiple size that
    fits in the mapping. Read a megabyte at a time, so the probe itself stays small."""
    found = []
    for start, end in _anonymous_mappings():
        at = start
        while at + 16 <= end:
            window = _read(mem, at, min(_WINDOW, end - at))
            if not window:
                break
            offset = 0
            while offset + 16 <= len(window):
                size_field = _word(window, offset + 8)
                size = size_field & ~0x7
                if (_word(window, offset) == 0 and size_field & _IS_MMAPPED and size >= _BIG
                        and size % 4096 == 0 and at + offset + size <= end):
                    found.append((at + offset + 16, size))
                    break
                offset += 4096
            at += offset + size if offset + 16 <= len(window) else len(window)
    return found


def _main_heap_chunks(mem: int) -> list[tuple[int, int]]:
    """(user address, size) of in-use chunks of at least 256 kB in the main arena's heap
    (the ``[heap]`` mapping), walked chunk by chunk. Other threads may change it meanwhile:
    the walk stops at the first header that does not make sense. Read a megabyte at a time,
    as the main heap is tens of megabytes."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[heap]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            break
    else:
        return []
    window, window_at = b"", start

    def word(address: int) -> int | None:
        """The 8 bytes at `address`, reading the heap a megabyte at a time."""
        nonlocal window, window_at
        if not window_at <= address <= window_at + len(window) - 8:
            window_at = address
            window = _read(mem, address, min(_WINDOW, end - address))
        if len(window) < address - window_at + 8:
            return None
        return _word(window, address - window_at)

    found = []
    at = start
    while at + 16 <= end:
        size_field = word(at + 8)
        if size_field is None:
            break
        size = size_field & ~0x7
        if size < 32 or size % 16 or at + size + 16 > end:
            break
        next_field = word(at + size + 8)
        if next_field is None:
            break
        if size >= _BIG and next_field & 0x1:  # the next chunk says this one is in use
            found.append((at + 16, size))
        at += size
    return found


def _type_names(tracked: list) -> dict[int, str]:
    """The address of each type object known here, to its name: static types (int, str, ...)
    are not gc-tracked, so they are added by hand."""
    types = {id(t): t.__name__ for t in tracked if isinstance(t, type)}
    for t in (int, str, bytes, float, tuple, list, dict, set, frozenset, bool, type(None)):
        types[id(t)] = t.__name__
    return types


def _classify(
    mem: int, address: int, size: int, by_id: dict[int, str], type_names: dict[int, str]
) -> dict[str, int]:
    """What evenly spaced words of one block point at: a gc-tracked object's type, "*name"
    for another object whose type is known (an int, a str), "ptr", "zero" or "other"."""
    data = _read(mem, address, size - 16)
    counts: collections.Counter[str] = collections.Counter()
    step = max(8, (len(data) // 8 // _SAMPLE_WORDS) * 8)
    for offset in range(0, len(data) - 7, step):
        word = _word(data, offset)
        if word == 0:
            counts["zero"] += 1
        elif word in by_id:
            counts[by_id[word]] += 1
        elif word % 8 == 0 and word < 1 << 48 and len(header := _read(mem, word, 16)) == 16:
            name = type_names.get(_word(header, 8))  # an object starts: refcount, type
            counts["*" + name if name else "ptr"] += 1
        else:
            counts["other"] += 1
    return dict(counts.most_common(6))


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
        tracked = gc.get_objects()
        types = collections.Counter(type(o).__name__ for o in tracked)
        by_id = {id(o): type(o).__name__ for o in tracked}
        type_names = _type_names(tracked)
        del tracked
        mem = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            big = [
                {"address": address, "size": size,
                 "points_at": _classify(mem, address, size, by_id, type_names)}
                for address, size in _mmapped_chunks(mem) + _main_heap_chunks(mem)
            ]
        finally:
            os.close(mem)
        del by_id, type_names
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
            "mmapped": [info.hblks, info.hblkhd],
            "big": big,
        }
        with target.open("a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR2, probe)
    from bot.cli import app

    app(["run"])


if __name__ == "__main__":
    main()
