"""Deadline-day load: 20,000 members file their pledge through the emulator over HTTP.

    python bench/deadline_day.py [--members 20000] [--concurrency 100] [--db sqlite|postgresql]
                                 [--processes 1|3] [--think-min 0.5 --think-max 1.5]

The data: ``--members`` active members in ``--units`` units of one province, every one of
them already joined (a chat identity with consent, linked to an emulated Telegram user), no
pledge yet, the Bình Thuận 2024 campaign applied at the province, bulk loaded through the
driver (bench/loadgen.py, after select_due.py) with the stored counts computed in SQL.

The bot: ``chuyende run`` in a process of its own (long polling, background jobs on as in
production), its clock (CHUYENDE_NOW) on 9/4/2024 20:45 local time, the last evening before
the pledge deadline ("trước ngày 10/4"): the day's reminders went out in the morning window
(07:30-20:30), and everyone who has not filed yet does it now. The emulator and the members
run in this process.

The arrival model: a closed loop. ``--concurrency`` members are active at a time; each plays
the whole conversation (10 updates: /topic, /pledge, the four sections typed one by one,
"back" from the review, the fourth section typed again, "submit", /mypledge), waiting for
the bot's whole reply (every message and edit it sends for that step) plus a think time drawn
from [think-min, think-max] s before the next message; when a member is done the next one in
line starts. The offered load is about concurrency / (think + latency) updates a second, and
it never runs ahead of the bot: when the bot slows down the members wait (as people do).

Measured: updates/s (updates answered / wall time), the time from a member's message to the
last message of the bot's reply (p50/p95/p99), errors (no whole reply within ``--timeout``,
a wrong reply, the error template, HTTP errors in the bot's log) and, at the end, the
submitted pledges counted in the database. The baseline, in the same run and with the same
arrival model and rate limiter: bare PTB echo (bench/echo_bot.py) over the same emulator.

``--processes 3 --db postgresql`` runs three ``chuyende run --webhook`` processes behind the
emulator's round-robin webhook delivery instead (see ``multi_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

NOW = "2024-04-09T20:45:00+07:00"
ECHO_BASE = 7_000_000_000  # the baseline's users (not in the database)


def log(message: str) -> None:
    print(message, flush=True)


def progress(stats: loadgen.Stats, elapsed: float) -> None:
    recent = [lat for sent, lat in stats.samples[-2000:]]
    log(
        f"    {elapsed:6.0f} s: {stats.updates} updates, {stats.finished} members done, "
        f"{sum(stats.errors.values())} errors; last 2000 "
        f"{loadgen.latency_line(recent) if recent else '-'}"
    )


def report(name: str, stats: loadgen.Stats, wall: float, complete: bool) -> dict:
    lat = [lat for _, lat in stats.samples]
    rate = len(lat) / wall if wall else float("nan")
    errors = sum(stats.errors.values())
    log(
        f"  {name}: {len(lat)} updates answered in {wall:.1f} s = {rate:.1f} updates/s; "
        f"{loadgen.latency_line(lat)}"
    )
    log(
        f"  {name}: errors {errors} {dict(stats.errors) or ''}; members finished "
        f"{stats.finished}; stray bot messages {stats.stray}"
        + ("" if complete else "; STOPPED at --max-seconds")
    )
    for example in stats.error_examples:
        log(f"      e.g. {example}")
    return {"rate": rate, "lat": lat, "errors": errors}


def http_errors(log_text: str) -> Counter[str]:
    """ERROR records in a bot's log (a failed API call, a handler's exception), by logger,
    with the exception's last line (the log format is "time LEVEL logger: message")."""
    found: Counter[str] = Counter()
    current = None
    for line in log_text.splitlines():
        if " ERROR " in line:
            current = line.split(" ERROR ", 1)[1].split(":", 1)[0]
            found[current] += 1
        elif current and line and not line.startswith((" ", "Traceback", "The above")):
            found[f"{current}: {line[:90]}"] += 1  # the exception itself
            current = None
    return found


async def baseline(args, emu: loadgen.LoadEmulator, workdir: Path) -> dict:
    """Bare PTB echo: the same members' arrival model, one text message per step."""
    env = loadgen.bot_env(
        emu.base_url, "sqlite+aiosqlite:///unused.db", loadgen.utc(NOW), args.rate
    )
    before = emu.stats["getUpdates"]
    echo = loadgen.BotProcess([sys.executable, str(HERE / "echo_bot.py")], env, workdir, "echo")
    try:
        while emu.stats["getUpdates"] < before + 2:
            if not echo.alive():
                raise SystemExit(f"echo bot exited:\n{echo.log_tail()}")
            await asyncio.sleep(0.1)
        steps = [
            loadgen.Step("text", f"tin nhắn {i}", 1, loadgen._contains(f"tin nhắn {i}"))
            for i in range(10)
        ]
        members = max(args.concurrency, args.baseline_updates // len(steps))
        ids = [ECHO_BASE + i for i in range(members)]
        stats, wall, complete = await loadgen.run_members(
            emu,
            ids,
            steps,
            concurrency=args.concurrency,
            think=(args.think_min, args.think_max),
            timeout=args.timeout,
            seed=7,
        )
    finally:
        await echo.stop()
    return report("baseline (bare PTB echo)", stats, wall, complete)


def webhook_available() -> bool:
    out = subprocess.run(
        [*loadgen.chuyende_command(), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "--webhook" in out.stdout


async def one_process(args, emu, url: str, workdir: Path, ids: list[int]) -> dict:
    env = loadgen.bot_env(emu.base_url, url, loadgen.utc(args.now), args.rate)
    command = [*loadgen.chuyende_command(), "run"]
    if args.profile_bot:
        command = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(Path(args.profile_bot).resolve()),
            "-m",
            "bot.cli",
            "run",
        ]
    bot = loadgen.BotProcess(command, env, workdir)
    try:
        started = await loadgen.wait_polling(emu, bot)
        log(f"  bot process {bot.pid} polling after {started:.1f} s; settling 3 s")
        await asyncio.sleep(3)
        cpu0, t0 = loadgen.cpu_seconds(bot.pid), time.monotonic()
        stats, wall, complete = await loadgen.run_wizard(
            emu, ids, args, seed=1, progress=progress
        )
        cpu = loadgen.cpu_seconds(bot.pid) - cpu0
        log(
            f"  bot process CPU {cpu:.0f} s over {time.monotonic() - t0:.0f} s "
            f"({cpu / (time.monotonic() - t0):.0%} of a core); RSS "
            f"{loadgen.read_status(bot.pid)}"
        )
    finally:
        code = await bot.stop(timeout=120 if args.profile_bot else 30)  # cProfile exits slowly
    errors = http_errors(bot.log_path.read_text("utf-8", "replace"))
    log(f"  bot exit code {code}; ERROR records in its log: {dict(errors)}")
    result = report("chuyende (1 process)", stats, wall, complete)
    result["log_errors"] = sum(n for k, n in errors.items() if ": " not in k)
    return result


async def multi_process(args, emu, url: str, workdir: Path, ids: list[int]) -> dict | None:
    """``--processes N``: N webhook processes on one PostgreSQL, the emulator delivering the
    updates round-robin across them (and redelivering to another one what got no 200).

    Written against the webhook branch's interface: ``chuyende run --webhook URL --listen
    HOST --port PORT`` with CHUYENDE_WEBHOOK_SECRET, and ``BotApiEmulator.route_webhook(
    [local URLs])``. Only the process holding the periodic-jobs lock calls setWebhook (with
    the public URL, which never resolves here); route_webhook sends the updates to the
    processes' local listeners instead."""
    if not webhook_available() or not hasattr(emu, "route_webhook"):
        log(
            "  webhook mode not available in this checkout (`chuyende run --help` has no "
            "--webhook, or the emulator has no route_webhook): multi-process run skipped"
        )
        return None
    import httpx

    secret = "bench-webhook-secret-0123456789"
    public = "https://bench.invalid/tg"
    ports = [args.first_port + i for i in range(args.processes)]
    extra = {"CHUYENDE_WEBHOOK_SECRET": secret, "CHUYENDE_RATE_BACKEND": args.rate_backend}
    if args.rate_backend == "redis":
        extra["CHUYENDE_REDIS_URL"] = args.redis_url
    bots = []
    for i, port in enumerate(ports):
        env = loadgen.bot_env(emu.base_url, url, loadgen.utc(args.now), args.rate, **extra)
        command = [
            *loadgen.chuyende_command(),
            "run",
            "--webhook",
            public,
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        bots.append(loadgen.BotProcess(command, env, workdir, f"bot{i}"))
    try:
        async with httpx.AsyncClient() as client:
            for bot, port in zip(bots, ports, strict=True):
                for _ in range(1200):
                    if not bot.alive():
                        raise SystemExit(f"bot on port {port} exited:\n{bot.log_tail()}")
                    try:
                        if (
                            await client.get(f"http://127.0.0.1:{port}/healthz")
                        ).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise SystemExit(f"bot on port {port} not healthy:\n{bot.log_tail()}")
        emu.route_webhook([f"http://127.0.0.1:{port}/tg" for port in ports])
        log(f"  {len(bots)} webhook processes healthy on ports {ports}; settling 3 s")
        await asyncio.sleep(3)
        cpu0 = [loadgen.cpu_seconds(b.pid) for b in bots]
        stats, wall, complete = await loadgen.run_wizard(
            emu, ids, args, seed=1, progress=progress
        )
        cpu = [loadgen.cpu_seconds(b.pid) - c for b, c in zip(bots, cpu0, strict=True)]
        log(f"  bot processes CPU s: {[round(c) for c in cpu]} over {wall:.0f} s")
    finally:
        codes = [await bot.stop() for bot in bots]
    errors = Counter()
    for bot in bots:
        errors += http_errors(bot.log_path.read_text("utf-8", "replace"))
    log(f"  exit codes {codes}; ERROR records in their logs: {dict(errors)}")
    result = report(f"chuyende ({len(bots)} webhook processes)", stats, wall, complete)
    result["log_errors"] = sum(n for k, n in errors.items() if ": " not in k)
    return result


async def bench(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="chuyende-deadline-", dir=args.dir))
    url = f"sqlite+aiosqlite:///{workdir / 'deadline.db'}" if args.db == "sqlite" else args.pg_url
    if args.processes > 1 and not webhook_available():
        log(
            "webhook mode not available in this checkout (`chuyende run --help` has no "
            "--webhook): the multi-process run needs the webhook branch merged"
        )
        return 2
    units = args.units or max(60, args.members // 40)
    log(
        f"deadline-day load: {args.members} members in {units} units, {args.db}, "
        f"{args.processes} process(es), {args.concurrency} active at a time, think "
        f"{args.think_min}-{args.think_max} s, per-bot rate {args.rate:g}/s, clock {args.now}"
    )
    p = loadgen.plan(args.members, units, all_joined=True)
    built = await asyncio.to_thread(loadgen.build, args.db, url, p)
    ids = loadgen.drivers(p, args.members)
    log(f"  data: {args.members} joined members bulk loaded in {built:.1f} s")

    emu = loadgen.LoadEmulator(token=loadgen.TOKEN, bot_username="chuyende_bench_bot")
    await emu.start()
    try:
        base = await baseline(args, emu, workdir)
        emu.stats.clear()
        if args.processes == 1:
            result = await one_process(args, emu, url, workdir, ids)
        else:
            result = await multi_process(args, emu, url, workdir, ids)
            if result is None:
                return 2
    finally:
        await emu.stop()

    counts = await loadgen.pledge_counts(url)
    submitted = await loadgen.submitted_by(url, ids)
    lat = result["lat"]
    p99 = loadgen.percentile(lat, 99) * 1000
    errors = result["errors"] + result["log_errors"]
    lost = args.members - submitted
    log("\nsummary")
    log(
        f"  updates/s                 {result['rate']:8.1f}   (bare echo {base['rate']:.1f}, "
        f"ratio {result['rate'] / base['rate']:.2f})"
    )
    for q in (50, 95, 99):
        log(
            f"  p{q} message -> reply     {loadgen.percentile(lat, q) * 1000:8.0f} ms"
            f"   (bare echo {loadgen.percentile(base['lat'], q) * 1000:.0f} ms)"
        )
    log(
        f"  errors                    {errors:8d}   (members {result['errors']}, bot log "
        f"{result['log_errors']})"
    )
    log(
        f"  pledges in the database   {dict(counts)}; submitted by the {args.members} "
        f"members: {submitted} (missing {lost})"
    )
    met = errors == 0 and p99 < 500 and lost == 0
    log(f"  goal (zero errors, p99 < 500 ms, every pledge stored): {'met' if met else 'NOT met'}")
    if not args.keep and args.db == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(workdir / "deadline.db") + suffix).unlink(missing_ok=True)
    log(f"  logs in {workdir}")
    return 0 if met else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--units", type=int, default=0, help="default: members / 40")
    parser.add_argument("--concurrency", type=int, default=100, help="members active at a time")
    parser.add_argument("--think-min", type=float, default=0.5)
    parser.add_argument("--think-max", type=float, default=1.5)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--pg-url", default=loadgen.PG_BASE + "bench_load_deadline")
    parser.add_argument("--rate", type=float, default=1000.0, help="CHUYENDE_PER_BOT_RATE")
    parser.add_argument("--rate-backend", default="postgres", help="CHUYENDE_RATE_BACKEND (N>1)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--first-port", type=int, default=18443)
    parser.add_argument("--now", default=NOW, help="CHUYENDE_NOW of the bot")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for a whole reply")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop the load after")
    parser.add_argument("--baseline-updates", type=int, default=5000)
    parser.add_argument("--profile-bot", help="cProfile stats of the bot process to this file")
    parser.add_argument("--dir", help="where the SQLite file and the logs go (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    args = parser.parse_args()
    if args.processes > 1 and args.db != "postgresql":
        parser.error("--processes > 1 needs --db postgresql")
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
