"""`chuyende run` with tracemalloc on, for bench/memory.py --tracemalloc.

    TRACE_DIR=$(mktemp -d) python bench/traced_bot.py

Each SIGUSR1 writes a snapshot to TRACE_DIR/snapshot-N.pickle (N = 1, 2, ...) from the
main thread, between two steps of the event loop; memory.py compares them.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    tracemalloc.start(int(os.environ.get("TRACE_FRAMES", "8")))
    target = Path(os.environ["TRACE_DIR"])
    taken = [0]

    def dump(_signum, _frame) -> None:
        taken[0] += 1
        path = target / f"snapshot-{taken[0]}.pickle"
        tracemalloc.take_snapshot().dump(str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)  # memory.py waits for the final name

    signal.signal(signal.SIGUSR1, dump)
    from bot.cli import app

    app(["run"])


if __name__ == "__main__":
    main()
