"""Send pipeline efficiency and reply latency against the Bot API emulator.

    python bench/send_pipeline.py [--messages 6000] [--rate 250] [--runs 3] [--db sqlite|postgresql]

The emulator (uvicorn) and the emulated members run in this process; the bot (the real
Application long-polling the emulator, and the outbox worker) runs in a child process, as in
production where Telegram is elsewhere (``--in-process`` puts everything in one event loop,
as in the tests; ``--profile-bot FILE`` writes the bot process's cProfile stats). Each run
prints its figures; the summary gives medians over the runs.

1. Emulator capacity: a plain ``httpx.AsyncClient`` (no limiter, no PTB) sends sendMessage
   to ``--capacity-users`` open chats at ``--capacity-concurrency`` for
   ``--capacity-seconds``. Nothing in this process can send faster than that.
2. Pipeline: ``--messages`` outbox rows over ``--chats`` chats (round robin, so one chat
   gets a message every ``chats / rate`` seconds, far above the 1/s per-chat limit), a
   fresh migrated database, ``set_random_429(0.02, retry_after=1)``, and an
   ``OutboxWorker(concurrency, batch)`` draining it. The rate achieved is read from the
   emulator's accepted deliveries (first to last); efficiency = rate / (background_share x
   per_bot). Lost and duplicated are checked twice: every row ends ``sent``, and every
   dedupe key appears exactly once in the recipients' transcripts.
3. Reply latency: ``--members`` joined members send /help (answered from the database) in a
   loop with a think time; the latency is ``user.send`` to the reply arriving in the
   emulator. First with the bot idle (``--idle-replies`` samples), then during step 2 (only
   replies sent between the first and the last broadcast delivery count). The random 429s
   stay on in both phases, so the only difference is the broadcast.

The worker is the project's ``OutboxWorker`` as shipped (``--concurrency``/``--batch`` only
change its arguments); bench/README.md tells how its pipelined claims and grouped marks came
about.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# PTB 22 builds RetryAfter through a deprecated int attribute unless this is set; the
# project reads both forms (bot.ratelimit.retry_after_seconds), so this only silences warnings.
os.environ.setdefault("PTB_TIMEDELTA", "true")

import httpx
from sqlmodel import func, select

from bot.app import build_application, polling
from bot.channels.emulator import BotApiEmulator, EmulatedUser
from bot.db import Database
from bot.migrate import upgrade_async
from bot.models import ChatIdentity, OutboxMessage
from bot.runtime import make_services
from bot.services import outbox
from bot.services.people import new_member
from bot.services.units import add_unit
from bot.settings import Settings
from scheduler.outbox_worker import OutboxWorker

TOKEN = "123456789:BENCH-token-for-the-emulator-only"
START = datetime(2024, 4, 5, 1, 0, tzinfo=UTC)  # as in the tests: inside the 2024 campaign
RECIPIENT_BASE = 10_000_000  # broadcast recipients' user ids
MEMBER_BASE = 9_000_000  # members who keep talking to the bot
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_NAME = "chuyende_bench_send"
PG_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_NAME}"
KEY = re.compile(r"\[(b\d+:\d+)\]")

log = logging.getLogger("bench.send_pipeline")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rate_of(times: list[float]) -> float:
    """Sends a second between the first and the last of ``times``."""
    times = sorted(times)
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    return (len(times) - 1) / (times[-1] - times[0])


def steady_rate(times: list[float]) -> float:
    """The rate between the 10th and the 90th percentile delivery: without the start and
    the tail (the last rows' 429 retries land up to retry_after after the rest)."""
    times = sorted(times)
    return rate_of(times[len(times) // 10 : len(times) * 9 // 10])


async def open_chats(emu: BotApiEmulator, user_ids: range, first_name: str = "Người nhận") -> None:
    """People who wrote to the bot once (a private chat exists only then), with their
    updates confirmed as a previous bot process would have, so the bot under test starts
    with an empty queue."""
    last = 0
    for user_id in user_ids:
        last = max(last, await emu.user(user_id, first_name).send("xin chào") or 0)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{emu.base_url}/bot{emu.token}/getUpdates", json={"offset": last + 1, "timeout": 0}
        )
        response.raise_for_status()
    assert emu.pending_updates() == 0


# ---------------------------------------------------------------------------------------------
# 1. The emulator's own capacity
# ---------------------------------------------------------------------------------------------


async def capacity_run(users: int, seconds: float, concurrency: int, clients: int) -> float:
    """sendMessage/s the emulator accepts from ``concurrency`` senders spread over ``clients``
    httpx clients. One client with many connections measures httpcore, not the emulator: its
    pool walks every connection for every request (see bench/README.md), so the senders are
    split over clients of a few connections each."""
    emu = BotApiEmulator(token=TOKEN, bot_username="chuyende_bench_bot")
    await emu.start()
    try:
        await open_chats(emu, range(RECIPIENT_BASE, RECIPIENT_BASE + users))
        url = f"{emu.base_url}/bot{emu.token}/sendMessage"
        per_client = max(1, concurrency // clients)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        pool = [httpx.AsyncClient(limits=limits, timeout=30) for _ in range(clients)]
        deadline = time.monotonic() + seconds

        async def hammer(sender: int) -> None:
            client = pool[sender % clients]
            i = sender
            while time.monotonic() < deadline:
                chat = RECIPIENT_BASE + i % users
                body = {"chat_id": chat, "text": f"Thông báo <b>{i}</b>", "parse_mode": "HTML"}
                response = await client.post(url, json=body)
                response.raise_for_status()
                i += concurrency

        try:
            await asyncio.gather(*(hammer(s) for s in range(concurrency)))
        finally:
            for client in pool:
                await client.aclose()
        return rate_of([d.monotonic for d in emu.deliveries])
    finally:
        await emu.stop()


def ptb_pool_connections(application: Any) -> int | None:
    """Connections in PTB's httpx pool for API calls (private attributes: None if moved)."""
    try:
        return len(application.bot._request[1]._client._transport._pool.connections)
    except (AttributeError, IndexError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# 2 and 3. The pipeline, with members talking to the bot
# ---------------------------------------------------------------------------------------------


@dataclass
class Talkers:
    """Members sending /help in a loop; latencies as (monotonic send time, seconds)."""

    users: list[EmulatedUser]
    think: tuple[float, float]
    rng: random.Random
    samples: list[tuple[float, float]] = field(default_factory=list)
    timeouts: int = 0

    async def one(self, user: EmulatedUser) -> None:
        sent = time.monotonic()
        await user.send("/help")
        try:
            await user.next_reply(timeout=30)
        except AssertionError:
            self.timeouts += 1
            return
        self.samples.append((sent, time.monotonic() - sent))

    async def loop(self, user: EmulatedUser, stop: asyncio.Event, until: int | None) -> None:
        # Start spread over one think time, so the members do not write in lockstep.
        await asyncio.sleep(self.rng.uniform(0, self.think[1]))
        while not stop.is_set() and (until is None or len(self.samples) < until):
            await self.one(user)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.think))

    async def run(self, stop: asyncio.Event, until: int | None = None) -> None:
        await asyncio.gather(*(self.loop(u, stop, until) for u in self.users))


def bot_process(config: dict[str, Any], go: Any, stop: Any, results: Any) -> None:
    """The bot in a process of its own, as in production where Telegram is elsewhere: the
    Application long-polling the emulator (members' replies) and, once `go` is set, the
    outbox worker draining the broadcast. Figures go back through `results`."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if config.get("profile"):
        import cProfile

        with cProfile.Profile() as profile:
            asyncio.run(_bot_process(config, go, stop, results))
        profile.dump_stats(config["profile"])
        return
    asyncio.run(_bot_process(config, go, stop, results))


async def _bot_process(config: dict[str, Any], go: Any, stop: Any, results: Any) -> None:
    settings = Settings(**config["settings"], _env_file=None)
    db = Database(settings.database_url)
    svc = make_services(settings, db=db, now=START)
    application = build_application(svc)
    limiter = application.bot.rate_limiter
    try:
        async with polling(application, poll_timeout=1):
            results.put(("ready", None))
            await asyncio.to_thread(go.wait)
            stats_before = Counter(limiter.stats)
            worker = OutboxWorker(
                svc, application.bot, concurrency=config["concurrency"], batch=config["batch"]
            )
            pool_sizes: list[int] = []
            drained_event = asyncio.Event()

            async def sample_pool() -> None:
                while not drained_event.is_set():
                    size = ptb_pool_connections(application)
                    if size is not None:
                        pool_sizes.append(size)
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample_pool())
            began = time.monotonic()
            while True:
                await worker.drain()
                async with db.reader() as session:
                    left = await outbox.depth(session)
                if not left or time.monotonic() - began > config["timeout"]:
                    break
                await asyncio.sleep(0.5)
            drained = time.monotonic() - began
            drained_event.set()
            await sampler
            stats = Counter(limiter.stats)
            stats.subtract(stats_before)
            results.put(
                (
                    "done",
                    {
                        "drain_s": drained,
                        "stats": dict(stats),
                        "worker": dict(worker.results),
                        "pool_max": max(pool_sizes, default=None),
                        "background_limit": limiter.per_bot * limiter.background_share,
                    },
                )
            )
            await asyncio.to_thread(stop.wait)  # keep answering members until told
    finally:
        await db.dispose()


async def fresh_database(kind: str, directory: Path, run: int) -> str:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{directory / f'send_{run}.db'}"
    else:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {PG_NAME}")
        finally:
            await admin.close()
        url = PG_URL
    await upgrade_async(url)
    return url


async def seed_members(db: Database, svc, count: int) -> None:
    """A province and a school union with ``count`` members already on the bot."""
    now = svc.clock.now()
    async with db.session() as session:
        await add_unit(session, "BT", "LĐLĐ tỉnh Bình Thuận")
        school = await add_unit(session, "SCH", "CĐCS Trường THPT Phan Thiết", "BT")
        for i in range(count):
            member = new_member(school, f"Nguyễn Văn Thành Viên {i}", f"+8491300{i:04d}", now)
            session.add(member)
            await session.flush()
            user_id = MEMBER_BASE + i
            session.add(
                ChatIdentity(
                    channel="telegram",
                    external_user_id=str(user_id),
                    chat_id=str(user_id),
                    member_id=member.id,
                    consent_at=now,
                    created_at=now,
                )
            )
        await session.commit()


async def pipeline_run(args: argparse.Namespace, run: int, directory: Path) -> dict[str, Any]:
    emu = BotApiEmulator(token=TOKEN, bot_username="chuyende_bench_bot", seed=run)
    await emu.start()
    url = await fresh_database(args.db, directory, run)
    settings = Settings(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=emu.base_url,
        DATABASE_URL=url,
        CHUYENDE_LOCALE="vi",
        CHUYENDE_PER_BOT_RATE=args.rate,
        CHUYENDE_BACKGROUND=False,  # this script runs the worker itself
        _env_file=None,
    )
    db = Database(url)
    svc = make_services(settings, db=db, now=START)
    try:
        if args.in_process:
            return await _pipeline(args, run, emu, svc, db)
        return await _pipeline_two_processes(args, run, emu, svc, db, settings)
    finally:
        await db.dispose()
        await emu.stop()


async def _prepare(args, run: int, emu: BotApiEmulator, svc, db: Database):
    """Members on the bot, open chats, and the broadcast queued in the outbox."""
    recipients = range(RECIPIENT_BASE, RECIPIENT_BASE + args.chats)
    members = range(MEMBER_BASE, MEMBER_BASE + args.members)
    await seed_members(db, svc, args.members)
    await open_chats(emu, recipients)
    await open_chats(emu, members, "Thành viên")

    keys = [f"b{run}:{i}" for i in range(args.messages)]
    queued = [
        outbox.Queued(
            dedupe_key=key,
            kind="bench",
            identity_id=None,
            chat_id=str(recipients[i % len(recipients)]),
            text=f"Thông báo thử <b>số {i}</b> [{key}]",
        )
        for i, key in enumerate(keys)
    ]
    async with db.session() as session:
        ids = await outbox.enqueue(session, queued, svc.clock.now())
        await session.commit()
    assert len(ids) == args.messages
    emu.set_random_429(args.ratio_429, retry_after=1)
    talkers = Talkers(
        [emu.user(m) for m in members], (args.think_min, args.think_max), random.Random(run)
    )
    return recipients, keys, talkers


async def _pipeline_two_processes(
    args, run: int, emu: BotApiEmulator, svc, db: Database, settings: Settings
) -> dict[str, Any]:
    """The emulator and the members here, the bot in a child process."""
    recipients, keys, talkers = await _prepare(args, run, emu, svc, db)
    context = multiprocessing.get_context("spawn")
    go, stop, results = context.Event(), context.Event(), context.Queue()
    config = {
        "settings": {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": emu.base_url,
            "DATABASE_URL": settings.database_url,
            "CHUYENDE_LOCALE": "vi",
            "CHUYENDE_PER_BOT_RATE": args.rate,
            "CHUYENDE_BACKGROUND": False,
        },
        "concurrency": args.concurrency,
        "batch": args.batch,
        "timeout": args.timeout,
        "profile": args.profile_bot,
    }
    child = context.Process(target=bot_process, args=(config, go, stop, results), daemon=True)
    child.start()
    try:
        kind, _ = await asyncio.to_thread(results.get, True, 120)
        assert kind == "ready"
        await asyncio.gather(*(talkers.one(u) for u in talkers.users))  # warm-up
        talkers.samples.clear()
        await talkers.run(asyncio.Event(), until=args.idle_replies)
        idle = [lat for _, lat in talkers.samples]
        talkers.samples.clear()

        rejected_before = len(emu.rejections)
        chatting = asyncio.Event()
        chatter = asyncio.create_task(talkers.run(chatting))
        go.set()
        kind, bot_side = await asyncio.to_thread(results.get, True, args.timeout + 60)
        assert kind == "done"
        chatting.set()
        await chatter
    finally:
        stop.set()
        await asyncio.to_thread(child.join, 30)
        if child.is_alive():
            child.kill()
    stats = Counter(bot_side["stats"])
    return await _results(
        emu, db, recipients, keys, talkers, idle, rejected_before, stats, bot_side
    )


async def _pipeline(args, run: int, emu: BotApiEmulator, svc, db: Database) -> dict[str, Any]:
    """Everything in this process and event loop (``--in-process``)."""
    recipients, keys, talkers = await _prepare(args, run, emu, svc, db)
    application = build_application(svc)
    limiter = application.bot.rate_limiter
    background_limit = limiter.per_bot * limiter.background_share
    async with polling(application, poll_timeout=1):
        # Warm-up: the first /help of each member (connections, templates, first queries).
        await asyncio.gather(*(talkers.one(u) for u in talkers.users))
        talkers.samples.clear()

        # 3a. Replies with the bot idle.
        await talkers.run(asyncio.Event(), until=args.idle_replies)
        idle = [lat for _, lat in talkers.samples]
        talkers.samples.clear()

        # 2 + 3b. The broadcast, with the members still talking.
        rejected_before = len(emu.rejections)
        stats_before = Counter(limiter.stats)
        stop = asyncio.Event()
        chatter = asyncio.create_task(talkers.run(stop))
        worker = OutboxWorker(svc, application.bot, concurrency=args.concurrency, batch=args.batch)
        pool_sizes: list[int] = []

        async def sample_pool() -> None:
            while not stop.is_set():
                size = ptb_pool_connections(application)
                if size is not None:
                    pool_sizes.append(size)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_pool())
        began = time.monotonic()
        while True:
            await worker.drain()
            async with db.reader() as session:
                left = await outbox.depth(session)
            if not left or time.monotonic() - began > args.timeout:
                break
            await asyncio.sleep(0.5)  # rows put back for later (not expected with 3 retries)
        drained = time.monotonic() - began
        stop.set()
        await chatter
        await sampler
        stats = Counter(limiter.stats)
        stats.subtract(stats_before)
    bot_side = {
        "drain_s": drained,
        "worker": dict(worker.results),
        "pool_max": max(pool_sizes, default=None),
        "background_limit": background_limit,
    }
    return await _results(
        emu, db, recipients, keys, talkers, idle, rejected_before, stats, bot_side
    )


async def _results(
    emu, db, recipients, keys, talkers, idle, rejected_before, stats, bot_side
) -> dict[str, Any]:
    """What the emulator saw and what the database says, for either layout."""
    background_limit, drained = bot_side["background_limit"], bot_side["drain_s"]
    wanted = set(recipients)
    times = [d.monotonic for d in emu.deliveries if d.chat_id in wanted]
    first, last = (min(times), max(times)) if times else (0.0, 0.0)
    during = [lat for sent, lat in talkers.samples if first <= sent <= last]

    async with db.reader() as session:
        rows = await session.exec(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
        statuses = {str(getattr(s, "value", s)): n for s, n in rows.all()}
    seen: Counter[str] = Counter()
    strays = 0
    for chat in recipients:
        for message in emu.user(chat).bot_messages:
            found = KEY.search(message.text)
            if found:
                seen[found.group(1)] += 1
            else:
                strays += 1
    lost = sum(1 for key in keys if seen[key] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    rejections = emu.rejections[rejected_before:]
    achieved = rate_of(times)
    return {
        "background_limit": background_limit,
        "achieved": achieved,
        "efficiency": achieved / background_limit,
        "drain_rate": len(times) / drained,
        "drain_s": drained,
        "span_s": last - first,
        "steady": steady_rate(times),
        "times": times,
        "delivered": len(times),
        "rows_sent": statuses.get("sent", 0),
        "statuses": statuses,
        "lost": lost,
        "duplicated": duplicated,
        "strays": strays,
        "rejected_429_bg": sum(r.status == 429 and r.chat_id in wanted for r in rejections),
        "rejected_429_reply": sum(r.status == 429 and r.chat_id not in wanted for r in rejections),
        "retries_429": stats["retries_429"],
        "gave_up_429": stats["gave_up_429"],
        "worker": bot_side["worker"],
        "idle": idle,
        "during": during,
        "reply_timeouts": talkers.timeouts,
        "sent_reply": stats["sent_reply"],
        "wait_background_s": stats["wait_background_s"],
        "pool_max": bot_side["pool_max"],
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def stalls(times: list[float], limit: float) -> int:
    """Whole seconds of the broadcast in which fewer than half the limit went out."""
    if not times:
        return 0
    first = min(times)
    per_second = Counter(int(t - first) for t in times)
    return sum(per_second[i] < limit / 2 for i in range(int(max(times) - first)))


def report_run(run: int, r: dict[str, Any]) -> None:
    idle, during = r["idle"], r["during"]
    print(
        f"  run {run}: achieved {r['achieved']:.1f}/s of {r['background_limit']:.0f}/s "
        f"(efficiency {r['efficiency']:.3f}; steady middle 80% {r['steady']:.1f}/s; "
        f"{stalls(r['times'], r['background_limit'])} s under half the limit); worker start "
        f"to drained {r['drain_s']:.1f} s = {r['drain_rate']:.1f}/s"
    )
    print(
        f"         delivered {r['delivered']}, rows {r['statuses']}, lost {r['lost']}, "
        f"duplicated {r['duplicated']}, strays {r['strays']}; 429s: background "
        f"{r['rejected_429_bg']}, replies {r['rejected_429_reply']} (limiter retries "
        f"{r['retries_429']}, gave up {r['gave_up_429']}); worker {r['worker']}"
    )
    print(f"         PTB pool connections at most {r['pool_max']}")
    print(
        f"         reply latency idle p50 {ms(percentile(idle, 50))} p95 "
        f"{ms(percentile(idle, 95))} (n={len(idle)}, {slow(idle):.0%} over 1 s); during "
        f"broadcast p50 {ms(percentile(during, 50))} p95 {ms(percentile(during, 95))} "
        f"(n={len(during)}, {slow(during):.0%} over 1 s); timeouts {r['reply_timeouts']}"
    )


def timeline(times: list[float]) -> list[int]:
    """Broadcast deliveries in each whole second from the first one."""
    if not times:
        return []
    first = min(times)
    per_second = Counter(int(t - first) for t in times)
    return [per_second[i] for i in range(int(max(times) - first) + 1)]


def slow(latencies: list[float]) -> float:
    return sum(x > 1 for x in latencies) / len(latencies) if latencies else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Send pipeline efficiency and reply latency against the Bot API emulator."
    )
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=250.0, help="CHUYENDE_PER_BOT_RATE")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--chats", type=int, default=2000, help="broadcast recipients")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="OutboxWorker concurrency (default: as shipped)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="OutboxWorker batch (default: as shipped)"
    )
    parser.add_argument("--timeline", action="store_true", help="deliveries in each second")
    parser.add_argument("--profile-bot", help="write the bot process's cProfile stats here")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the bot in the emulator's process and event loop (default: a child process)",
    )
    parser.add_argument("--ratio-429", type=float, default=0.02)
    parser.add_argument("--members", type=int, default=20, help="members talking to the bot")
    parser.add_argument("--idle-replies", type=int, default=200)
    parser.add_argument("--think-min", type=float, default=0.5, help="seconds between messages")
    parser.add_argument("--think-max", type=float, default=1.5)
    parser.add_argument("--capacity-users", type=int, default=2000)
    parser.add_argument("--capacity-seconds", type=float, default=4.0)
    parser.add_argument("--capacity-concurrency", type=int, default=64)
    parser.add_argument("--capacity-clients", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up draining after")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(bench(args))


async def bench(args: argparse.Namespace) -> None:
    print(
        f"send pipeline bench: {args.messages} messages over {args.chats} chats, per_bot "
        f"{args.rate:g}/s, {args.ratio_429:.0%} random 429 (retry_after 1 s), "
        f"worker concurrency {args.concurrency} batch {args.batch}, {args.members} members "
        f"talking, "
        f"{args.db}, {args.runs} runs"
    )
    capacities, single = [], []
    for run in range(args.runs):
        capacities.append(
            await capacity_run(
                args.capacity_users,
                args.capacity_seconds,
                args.capacity_concurrency,
                args.capacity_clients,
            )
        )
        single.append(
            await capacity_run(args.capacity_users, args.capacity_seconds / 2, 64, clients=1)
        )
        print(
            f"  emulator capacity run {run}: {capacities[-1]:.0f} sendMessage/s "
            f"({args.capacity_concurrency} senders over {args.capacity_clients} httpx clients, "
            f"{args.capacity_users} chats); one httpx client with 64 connections: "
            f"{single[-1]:.0f}/s"
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="chuyende-bench-") as tmp:
        for run in range(args.runs):
            result = await pipeline_run(args, run, Path(tmp))
            report_run(run, result)
            if args.timeline:
                print(f"         deliveries per second: {timeline(result['times'])}")
            results.append(result)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    def med_pct(key: str, q: float) -> float:
        return statistics.median(percentile(r[key], q) for r in results)

    idle_p95, during_p95 = med_pct("idle", 95), med_pct("during", 95)
    efficiency = med("efficiency")
    each = ", ".join(f"{r['efficiency']:.3f}" for r in results)
    verdict = "met" if efficiency >= 0.95 else "NOT met"
    lost = sum(r["lost"] for r in results)
    duplicated = sum(r["duplicated"] for r in results)
    print(
        f"\nsummary (medians of {args.runs} runs; {args.db}; worker "
        f"c={args.concurrency} b={args.batch})"
    )
    print(f"  emulator capacity              {statistics.median(capacities):7.0f} msg/s")
    print(f"  background lane limit          {results[0]['background_limit']:7.0f} msg/s")
    print(f"  achieved (first to last)       {med('achieved'):7.1f} msg/s")
    print(f"  efficiency                     {efficiency:7.3f}   target >= 0.95 {verdict} ({each})")
    print(f"  steady rate (middle 80%)       {med('steady'):7.1f} msg/s")
    print(f"  lost / duplicated              {lost:>3} / {duplicated}  (all runs)")
    gave_up = sum(r["gave_up_429"] for r in results)
    print(
        f"  429s background / replies      {med('rejected_429_bg'):>3.0f} / "
        f"{med('rejected_429_reply'):.0f}  (limiter gave up {gave_up})"
    )
    print(
        f"  reply p50 idle / broadcast     {ms(med_pct('idle', 50))} / {ms(med_pct('during', 50))}"
    )
    print(
        f"  reply p95 idle / broadcast     {ms(idle_p95)} / {ms(during_p95)}  "
        f"(x{during_p95 / idle_p95:.2f})"
    )


if __name__ == "__main__":
    main()
