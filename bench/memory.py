"""Memory of an idle bot with 1,000,000 members, and over a 200,000-update load.

    python bench/memory.py [--members 1000000] [--units 5000] [--load-updates 200000]
                           [--concurrency 100] [--db sqlite|postgresql] [--reuse]
                           [--warmup-updates 0] [--tracemalloc | --heap]

The data is select_due.py's province (1,000,000 members in 5,000 units: 80% on the bot of
whom 3% blocked, 45% with a submitted pledge, 5% a draft, reminder-log rows, the Bình Thuận
2024 campaign at the province, stored counts), bulk loaded through the driver
(bench/loadgen.py). The bot is ``chuyende run`` in its own process (long polling the
emulator, background jobs on), its clock at 9/4/2024 20:45 local time (after the day's
reminder window, so the idle bot has nothing to send).

Measured from /proc/PID/status: VmRSS (resident now) and VmHWM (the peak resident so far).

1. Baselines in the same run: bare PTB echo (bench/echo_bot.py) idle, and ``chuyende run``
   idle on a migrated database with the campaign and no members.
2. Idle: ``chuyende run`` on the 1,000,000-member database, after start-up, its first
   planning tick and the start-up ANALYZE: sampled every second until it has moved less
   than 1 MB over 10 s (at least 20 s, at most ``--settle-max`` s).
3. Load: ``--load-updates / 10`` members who have not pledged run the deadline-day
   conversation of bench/deadline_day.py (/topic, /pledge, four sections, back, the fourth
   again, submit, /mypledge), ``--concurrency`` at a time, each waiting for the bot's reply
   plus a think time. RSS sampled every second through the load, then 30 s after it.
   With ``--warmup-updates N``, other members first run the same conversation for N
   updates; the bot is then "warm" (its pools, caches and allocator high-water marks as a
   process that has been serving a while has them), and the load is measured from there.

Printed: idle RSS, peak (VmHWM and the highest sample), final, growth (final - idle, and
final - warm after a warm-up) and the growth per 10,000 updates over the second half of
the load.
Goal: idle <= 200 MB and no growth over the load. ``--tracemalloc`` runs the bot under
tracemalloc (bench/traced_bot.py; several times slower) and prints what grew between a
snapshot at idle and one after the load, by source line. ``--heap`` runs it under
bench/heap_probe_bot.py instead (no slow-down), probes every 30 s and prints where the
resident memory is (Python's allocator, malloc, SQLite) at idle, through the load and after,
and which object types grew over the second half.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

NOW = "2024-04-09T20:45:00+07:00"
GOAL_IDLE_MB = 200.0


def log(message: str) -> None:
    print(message, flush=True)


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


class Sampler:
    """VmRSS once a second, as (monotonic, updates done so far, kB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self.updates = lambda: 0

    def take(self) -> int:
        rss = loadgen.read_status(self.pid).get("VmRSS", 0)
        self.samples.append((time.monotonic(), self.updates(), rss))
        return rss

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.take()
            await asyncio.sleep(1)


async def settle(bot: loadgen.BotProcess, max_seconds: float) -> dict[str, int]:
    """Wait until VmRSS moved less than 1 MB over the last 10 s (at least 20 s)."""
    began = time.monotonic()
    seen: list[int] = []
    while True:
        if not bot.alive():
            raise SystemExit(f"the bot exited:\n{bot.log_tail()}")
        seen.append(loadgen.read_status(bot.pid).get("VmRSS", 0))
        elapsed = time.monotonic() - began
        if elapsed >= 20 and max(seen[-10:]) - min(seen[-10:]) < 1024:
            break
        if elapsed > max_seconds:
            log(
                f"    RSS still moving after {max_seconds:.0f} s: {[s // 1024 for s in seen[-10:]]}"
            )
            break
        await asyncio.sleep(1)
    return loadgen.read_status(bot.pid)


async def idle_rss(emu, command: list[str], env: dict, workdir: Path, name: str, settle_max):
    before = emu.stats["getUpdates"]
    bot = loadgen.BotProcess(command, env, workdir, name)
    try:
        while emu.stats["getUpdates"] < before + 2:
            if not bot.alive():
                raise SystemExit(f"{name} exited:\n{bot.log_tail()}")
            await asyncio.sleep(0.1)
        return await settle(bot, settle_max)
    finally:
        await bot.stop()


def growth_per_10k(samples: list[tuple[float, int, int]]) -> float:
    """Least-squares slope of RSS (kB) against updates over the second half of the load."""
    if not samples:
        return float("nan")
    half = [(u, r) for _, u, r in samples if u >= samples[-1][1] / 2]
    if len(half) < 3:
        return float("nan")
    n = len(half)
    mx = sum(u for u, _ in half) / n
    my = sum(r for _, r in half) / n
    sxx = sum((u - mx) ** 2 for u, _ in half)
    if not sxx:
        return float("nan")
    return sum((u - mx) * (r - my) for u, r in half) / sxx * 10_000


async def snapshot(bot: loadgen.BotProcess, trace_dir: Path, n: int) -> Path:
    path = trace_dir / f"snapshot-{n}.pickle"
    bot.proc.send_signal(signal.SIGUSR1)
    for _ in range(1200):
        if path.exists():
            return path
        await asyncio.sleep(0.1)
    raise SystemExit("no tracemalloc snapshot from the bot")


def print_trace_diff(first: Path, second: Path, top: int) -> None:
    a = tracemalloc.Snapshot.load(str(first))
    b = tracemalloc.Snapshot.load(str(second))
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    a, b = a.filter_traces(filters), b.filter_traces(filters)
    total_a = sum(s.size for s in a.statistics("filename"))
    total_b = sum(s.size for s in b.statistics("filename"))
    log(
        f"  tracemalloc: traced {total_a / 2**20:.1f} MB at idle -> {total_b / 2**20:.1f} MB "
        f"after the load ({(total_b - total_a) / 2**20:+.1f} MB)"
    )
    log("  grew most, by line (size diff, count diff):")
    for stat in b.compare_to(a, "lineno")[:top]:
        frame = stat.traceback[0]
        log(
            f"    {stat.size_diff / 1024:+9.0f} kB {stat.count_diff:+8d}  "
            f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        )
    log("  largest at idle, by file:")
    for stat in a.statistics("filename")[:top]:
        name = stat.traceback[0].filename.split("site-packages/")[-1]
        log(f"    {stat.size / 1024:9.0f} kB  {name}")


async def probe_heap(bot, sampler: Sampler, probes: list[int], stop: asyncio.Event) -> None:
    """Ask heap_probe_bot for a line every 30 s, and once more just after the load."""
    while not stop.is_set():
        probes.append(sampler.updates())
        bot.proc.send_signal(signal.SIGUSR2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 30)
    await asyncio.sleep(1)
    probes.append(sampler.updates())
    bot.proc.send_signal(signal.SIGUSR2)
    await asyncio.sleep(2)  # the line is written from the bot's main thread


def print_heap(heap_file: Path, probes: list[int], top: int) -> None:
    lines = [json.loads(line) for line in heap_file.read_text().splitlines()]
    rows = list(zip(probes, lines, strict=False))  # a probe at the very end may be missing
    if len(rows) < 3:
        log("  heap: too few probes")
        return
    log("  where the memory is (MB; Python = live blocks / its arenas; malloc = in use / free;"
        " threads / malloc arenas):")
    log("    updates      RSS   Python live  arenas   malloc used   free   SQLite  objects"
        "  threads")
    picks = sorted({0, 1, len(rows) // 4, len(rows) // 2, 3 * len(rows) // 4, len(rows) - 1})
    for i in picks:
        updates, h = rows[i]
        log(
            f"    {updates:7d} {h['rss_kb'] / 1024:8.1f} {h['py_allocated'] / 2**20:11.1f} "
            f"{h['py_arenas'] / 2**20:8.1f} {h['malloc_in_use'] / 2**20:11.1f} "
            f"{h['malloc_free'] / 2**20:7.1f} {h['sqlite'] / 2**20:8.1f} {h['objects']:8d} "
            f"{h['threads']:4d} / {len(h['arenas'])}"
        )
    log("  malloc's own mmaps (blocks ≥ 256 kB) as they came and went (kB: what they point at):")
    before: dict[int, dict] = {}
    for updates, h in rows:
        now = {b["address"]: b for b in h.get("big", [])}
        for address in now.keys() - before.keys():
            b = now[address]
            log(f"    +{b['size'] // 1024:7d} at {updates:7d} updates: {b['points_at']}")
        for address in before.keys() - now.keys():
            log(f"    -{before[address]['size'] // 1024:7d} at {updates:7d} updates")
        before = now
    half, last = dict(rows[len(rows) // 2][1]["types"]), dict(rows[-1][1]["types"])
    # Only types in both top lists: one that left the top 40 in between is not a change.
    grew = sorted(((last[k] - half[k], k) for k in set(half) & set(last)), reverse=True)
    log("  object types that grew most over the second half (count):")
    log("    " + ", ".join(f"{name} {n:+d}" for n, name in grew[:top] if n > 0))


async def bench(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chuyende-memory-", dir=args.dir))
    data_dir = Path(args.dir or tempfile.gettempdir())
    members_db = data_dir / f"memory_{args.members}_{args.units}.db"
    empty_db = workdir / "empty.db"
    pristine = f"sqlite+aiosqlite:///{members_db}" if args.db == "sqlite" else args.pg_url
    log(
        f"memory bench: {args.members} members in {args.units} units, {args.db}, load "
        f"{args.load_updates} updates at {args.concurrency} members at a time"
    )
    p = loadgen.plan(args.members, args.units, all_joined=False)
    if args.reuse and args.db == "sqlite" and members_db.exists():
        log(f"  data: reusing {members_db.name}")
    else:
        built = await asyncio.to_thread(loadgen.build, args.db, pristine, p)
        log(f"  data: {args.members} members bulk loaded in {built:.1f} s")
    url = pristine
    if args.db == "sqlite":  # the load files pledges: the bot works on a copy
        shutil.copyfile(members_db, workdir / "run.db")
        url = f"sqlite+aiosqlite:///{workdir / 'run.db'}"
    ids = loadgen.drivers(p, (args.warmup_updates + args.load_updates) // 10)
    warmup_ids, ids = ids[: args.warmup_updates // 10], ids[args.warmup_updates // 10 :]
    empty = loadgen.plan(0, 52, all_joined=True)
    await asyncio.to_thread(loadgen.build, "sqlite", f"sqlite+aiosqlite:///{empty_db}", empty)

    emu = loadgen.LoadEmulator(token=loadgen.TOKEN, bot_username="chuyende_bench_bot")
    await emu.start()
    now = loadgen.utc(args.now)
    run = [*loadgen.chuyende_command(), "run"]
    try:
        env = loadgen.bot_env(emu.base_url, f"sqlite+aiosqlite:///{empty_db}", now, args.rate)
        echo = await idle_rss(
            emu, [sys.executable, str(HERE / "echo_bot.py")], env, workdir, "echo", 60
        )
        log(f"  baseline: bare PTB echo idle VmRSS {mb(echo['VmRSS'])} (VmHWM {mb(echo['VmHWM'])})")
        bare = await idle_rss(emu, run, env, workdir, "empty", 60)
        log(
            f"  baseline: chuyende run, no members, idle VmRSS {mb(bare['VmRSS'])} "
            f"(VmHWM {mb(bare['VmHWM'])})"
        )

        env = loadgen.bot_env(emu.base_url, url, now, args.rate)
        command = run
        trace_dir = workdir / "trace"
        heap_file = workdir / "heap.jsonl"
        if args.heap:
            env["HEAP_FILE"] = str(heap_file)
            command = [sys.executable, str(HERE / "heap_probe_bot.py")]
        if args.tracemalloc:
            trace_dir.mkdir()
            env["TRACE_DIR"] = str(trace_dir)
            command = [sys.executable, str(HERE / "traced_bot.py")]
        before = emu.stats["getUpdates"]
        bot = loadgen.BotProcess(command, env, workdir, "bot")
        try:
            began = time.monotonic()
            while emu.stats["getUpdates"] < before + 2:
                if not bot.alive():
                    raise SystemExit(f"the bot exited:\n{bot.log_tail()}")
                await asyncio.sleep(0.1)
            log(f"  bot {bot.pid} polling after {time.monotonic() - began:.1f} s; settling")
            idle = await settle(bot, args.settle_max)
            log(
                f"  idle ({time.monotonic() - began:.0f} s after start): VmRSS {mb(idle['VmRSS'])}"
                f", VmHWM {mb(idle['VmHWM'])}"
            )
            warm = None
            if warmup_ids:
                warmed, warm_wall, _ = await loadgen.run_wizard(emu, warmup_ids, args, seed=5)
                await asyncio.sleep(30)
                warm = loadgen.read_status(bot.pid)
                log(
                    f"  warm-up: {warmed.updates} updates in {warm_wall:.0f} s, errors "
                    f"{sum(warmed.errors.values())}; 30 s after: VmRSS {mb(warm['VmRSS'])}"
                )
            if args.tracemalloc:
                first = await snapshot(bot, trace_dir, 1)

            sampler = Sampler(bot.pid)
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler.run(stop))
            probes: list[int] = []  # updates done at each heap probe
            probing = (asyncio.create_task(probe_heap(bot, sampler, probes, stop))
                       if args.heap else None)

            def progress(stats: loadgen.Stats, elapsed: float) -> None:
                sampler.updates = lambda: stats.updates
                log(
                    f"    {elapsed:6.0f} s: {stats.updates} updates, errors "
                    f"{sum(stats.errors.values())}, VmRSS {mb(sampler.samples[-1][2])}"
                )

            stats, wall, complete = await loadgen.run_wizard(
                emu, ids, args, seed=3, progress=progress
            )
            sampler.updates = lambda: stats.updates
            after_load = sampler.take()
            await asyncio.sleep(30)
            stop.set()
            await sampling
            if probing is not None:
                await probing
            final = loadgen.read_status(bot.pid)
            if args.tracemalloc:
                second = await snapshot(bot, trace_dir, 2)
        finally:
            await bot.stop()
    finally:
        await emu.stop()

    lat = [lat for _, lat in stats.samples]
    during = [r for _, u, r in sampler.samples]
    growth = final["VmRSS"] - idle["VmRSS"]
    slope = growth_per_10k([s for s in sampler.samples if s[1] > 0])
    log(
        f"  load: {stats.updates} updates in {wall:.0f} s "
        f"({len(lat) / max(wall, 1e-9):.1f}/s), errors "
        f"{sum(stats.errors.values())} {dict(stats.errors) or ''}, "
        f"{loadgen.latency_line(lat)}" + ("" if complete else "; STOPPED at --max-seconds")
    )
    log("\nsummary")
    log(f"  bare PTB echo idle        {mb(echo['VmRSS']):>10}")
    log(f"  chuyende, no members      {mb(bare['VmRSS']):>10}")
    log(
        f"  chuyende, {args.members} idle {mb(idle['VmRSS']):>10}   (goal <= "
        f"{GOAL_IDLE_MB:.0f} MB: {'met' if idle['VmRSS'] / 1024 <= GOAL_IDLE_MB else 'NOT met'};"
        f" {idle['VmRSS'] / bare['VmRSS']:.2f}x no members, "
        f"{idle['VmRSS'] / echo['VmRSS']:.2f}x bare echo)"
    )
    log(
        f"  peak                      {mb(max(during)):>10}   (highest sample; VmHWM "
        f"{mb(final['VmHWM'])}, VmHWM at idle {mb(idle['VmHWM'])})"
    )
    log(f"  end of load               {mb(after_load):>10}")
    log(f"  final (30 s after)        {mb(final['VmRSS']):>10}")
    log(
        f"  growth final - idle       {growth / 1024:+9.1f} MB   over {stats.updates} updates; "
        f"second half of the load {slope / 1024:+.2f} MB per 10,000 updates"
    )
    if warm is not None:
        log(f"  warm (after the warm-up)  {mb(warm['VmRSS']):>10}")
        log(
            f"  growth final - warm       {(final['VmRSS'] - warm['VmRSS']) / 1024:+9.1f} MB   "
            f"over the {stats.updates} updates after the warm-up's {args.warmup_updates}"
        )
    if args.tracemalloc:
        print_trace_diff(first, second, args.top)
    if args.heap:
        print_heap(heap_file, probes, args.top)
    if args.db == "sqlite":
        (workdir / "run.db").unlink(missing_ok=True)
    log(f"  logs in {workdir}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=5000)
    parser.add_argument("--load-updates", type=int, default=200_000)
    parser.add_argument("--warmup-updates", type=int, default=0,
                        help="updates of other members before the measured load")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--think-min", type=float, default=0.5)
    parser.add_argument("--think-max", type=float, default=1.5)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=loadgen.PG_BASE + "bench_load_memory")
    parser.add_argument("--rate", type=float, default=1000.0, help="CHUYENDE_PER_BOT_RATE")
    parser.add_argument("--now", default=NOW)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--settle-max", type=float, default=180.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--heap", action="store_true", help="probe where the memory is")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--dir", help="data and logs (default: the temp directory)")
    parser.add_argument("--reuse", action="store_true", help="reuse the SQLite data set")
    args = parser.parse_args()
    if args.heap and args.tracemalloc:
        parser.error("--heap and --tracemalloc each run the bot under their own wrapper")
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
