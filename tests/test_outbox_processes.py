"""Three worker processes drain one outbox on PostgreSQL: every row is sent exactly once.

Each worker is a separate Python process with its own Database (its own connection pool) and
its own PTB bot, sending to the Bot API emulator that runs in the test process. They start
together on a barrier and claim in small batches, so their claims interleave; the proof is
the emulator's delivery record (one message per chat) and the rows' final status. Runs when
TEST_DATABASE_URL names a reachable PostgreSQL, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlmodel import select

from bot.channels.emulator import BotApiEmulator
from bot.db import Database
from bot.models import OutboxMessage, OutboxStatus
from bot.services import outbox
from tests.conftest import TOKEN
from tests.services import postgres_url_or_skip

ROOT = Path(__file__).resolve().parents[1]
ROWS = 300
WORKERS = 3
WORKER = """
import asyncio, json, sys
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest
from bot.ratelimit import LaneRateLimiter
from bot.runtime import make_services
from bot.settings import Settings
from scheduler.outbox_worker import OutboxWorker
from sqlmodel import select
from bot.models import OutboxMessage

async def main(token, api, url):
    settings = Settings(TELEGRAM_BOT_TOKEN=token, TELEGRAM_API_BASE_URL=api, DATABASE_URL=url,
                        CHUYENDE_BACKGROUND=False, _env_file=None)
    svc = make_services(settings)
    bot = ExtBot(token, base_url=settings.bot_api_url, base_file_url=settings.bot_file_url,
                 rate_limiter=LaneRateLimiter(per_bot=2000, background_share=1),
                 request=HTTPXRequest(connection_pool_size=32))
    async with bot:
        worker = OutboxWorker(svc, bot, concurrency=8, batch=10)
        async with svc.db.reader() as session:  # connected before the race starts
            await session.exec(select(OutboxMessage.id).limit(1))
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        claimed = await worker.drain()
    await svc.db.dispose()
    print(json.dumps({"claimed": claimed, **worker.results}), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_claims_on_postgresql_skip_rows_another_transaction_holds():
    """The claim really is `FOR UPDATE SKIP LOCKED`: a row locked elsewhere is passed over."""
    url = await postgres_url_or_skip()
    db = Database(url)
    await db.drop_all()
    await db.create_all()
    now = datetime.now(UTC)
    try:
        async with db.session() as session:
            await outbox.enqueue(
                session,
                [outbox.Queued(f"k{n}", "broadcast", None, str(n), f"m{n}") for n in range(4)],
                now,
            )
            await session.commit()
        other = Database(url)  # another process's pool
        try:
            async with other.engine.connect() as holder:  # a transaction holding one row
                locked = (
                    await holder.execute(text("SELECT min(id) FROM outboxmessage"))
                ).scalar_one()
                await holder.execute(
                    text("SELECT id FROM outboxmessage WHERE id = :id FOR UPDATE"), {"id": locked}
                )
                async with db.session() as session:  # would block here without SKIP LOCKED
                    claimed = await asyncio.wait_for(outbox.claim(session, "w", now, 10), 5)
                assert locked not in {m.id for m in claimed}
                assert len(claimed) == 3
                await holder.rollback()
        finally:
            await other.dispose()
    finally:
        await db.dispose()


async def test_three_worker_processes_send_each_outbox_row_exactly_once():
    url = await postgres_url_or_skip()
    emu = BotApiEmulator(token=TOKEN)
    await emu.start()
    db = Database(url)
    await db.drop_all()
    await db.create_all()
    processes: list[asyncio.subprocess.Process] = []
    try:
        users = [emu.user(60_000 + n, started=True) for n in range(ROWS)]
        async with db.session() as session:
            await outbox.enqueue(
                session,
                [
                    outbox.Queued(f"p:{u.id}", "broadcast", None, str(u.id), f"tin {u.id}")
                    for u in users
                ],
                datetime.now(UTC),
            )
            await session.commit()
        for _ in range(WORKERS):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER,
                TOKEN,
                emu.base_url,
                url,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"READY"
        for process in processes:  # the barrier: all three start claiming now
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        results = []
        for process in processes:
            out, _ = await asyncio.wait_for(process.communicate(), 120)
            assert process.returncode == 0
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await emu.stop()

    try:
        print(f"per worker: {results}")
        per_chat = Counter(d.chat_id for d in emu.deliveries)
        assert len(per_chat) == ROWS
        assert set(per_chat.values()) == {1}  # each row sent once, none twice
        assert sum(r["sent"] for r in results) == ROWS
        assert sum(r["claimed"] for r in results) == ROWS  # no row claimed by two workers
        assert sum(r["sent"] > 0 for r in results) >= 2  # they really shared the work
        async with db.reader() as session:
            statuses = (await session.exec(select(OutboxMessage.status))).all()
        assert Counter(statuses) == {OutboxStatus.sent: ROWS}
    finally:
        await db.dispose()
