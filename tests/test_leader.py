"""Leadership of the periodic jobs on real locks: a PostgreSQL advisory lock and a flock.

A killed leader is a real process killed with SIGKILL; a leader cut off from PostgreSQL is a
real backend terminated with pg_terminate_backend. PostgreSQL cases run when
TEST_DATABASE_URL is set and reachable, and are skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from bot.db import asyncpg_connect_args
from bot.leader import FileLock, Leadership, PostgresLock, ProcessLock, lock_for_database
from tests.services import postgres_url_or_skip

RETRY = 0.3  # followers try this often in these tests (5 s in production)
CHECK = 0.3
# Failover must come within the retry interval; the slack covers process and event-loop
# scheduling on a busy two-core machine.
SLACK = 2.0

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import asyncio, sys
from bot.leader import Leadership, lock_for_database, PostgresLock

async def main(url, key):
    lock = lock_for_database(url, key=int(key))
    leadership = Leadership(lock, retry_seconds=0.2, check_seconds=0.2)
    await leadership.start()
    print("LEADING" if leadership.is_leader else "FOLLOWING", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(params=["sqlite", "postgresql"])
async def lock_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    return await postgres_url_or_skip()


@pytest.fixture
def key() -> int:
    """A lock key of this test alone, so runs beside each other never contend."""
    return secrets.randbits(62)


@pytest.fixture
async def contenders(lock_url: str, key: int) -> AsyncIterator[list[Leadership]]:
    made: list[Leadership] = []
    yield made
    for leadership in made:
        await leadership.stop()


def _contender(made: list[Leadership], url: str, key: int) -> Leadership:
    leadership = Leadership(
        lock_for_database(url, key=key), retry_seconds=RETRY, check_seconds=CHECK
    )
    made.append(leadership)
    return leadership


async def _spawn_holder(url: str, key: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        url,
        str(key),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"LEADING"
    return process


def test_the_lock_fits_the_database(tmp_path: Path):
    assert isinstance(lock_for_database("sqlite+aiosqlite:///:memory:"), ProcessLock)
    assert isinstance(lock_for_database("sqlite+aiosqlite://"), ProcessLock)
    lock = lock_for_database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert isinstance(lock, FileLock) and lock.path == tmp_path / "x.db.leader"
    assert isinstance(lock_for_database("postgresql+asyncpg://postgres@127.0.0.1/x"), PostgresLock)
    with pytest.raises(ValueError, match="positive"):
        Leadership(ProcessLock(), retry_seconds=0)


async def test_only_one_of_several_contenders_leads(lock_url, key, contenders):
    elected: list[int] = []
    for n in range(3):
        leadership = _contender(contenders, lock_url, key)

        async def note(n: int = n) -> None:
            elected.append(n)

        leadership.on_elected(note)
        await leadership.start()
    await asyncio.sleep(RETRY * 3)  # the followers have retried a few times by now
    assert [c.is_leader for c in contenders] == [True, False, False]
    assert elected == [0]

    await contenders[0].stop()  # a clean stop hands over within one retry
    assert await contenders[1].wait_until(True, RETRY + SLACK) or await contenders[2].wait_until(
        True, SLACK
    )
    assert sum(c.is_leader for c in contenders) == 1
    assert len(elected) == 2


async def test_a_killed_leader_is_replaced_within_the_failover_time(lock_url, key, contenders):
    holder = await _spawn_holder(lock_url, key)
    try:
        follower = _contender(contenders, lock_url, key)
        await follower.start()
        await asyncio.sleep(RETRY * 3)
        assert not follower.is_leader  # the other process holds it

        killed_at = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        assert await follower.wait_until(True, RETRY + SLACK)
        took = time.monotonic() - killed_at
        print(f"failover after SIGKILL: {took:.2f} s (retry interval {RETRY} s)")
        assert took <= RETRY + SLACK
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_follower_does_not_take_over_from_a_live_process(lock_url, key, contenders):
    holder = await _spawn_holder(lock_url, key)
    try:
        follower = _contender(contenders, lock_url, key)
        await follower.start()
        assert not await follower.wait_until(True, RETRY * 5)
    finally:
        holder.kill()
        await holder.wait()


async def test_a_leader_cut_off_from_postgresql_steps_down_and_another_leads(key, contenders):
    url = await postgres_url_or_skip()
    first, second = _contender(contenders, url, key), _contender(contenders, url, key)
    deposed: list[str] = []

    async def note() -> None:
        deposed.append("first")

    first.on_deposed(note)
    await first.start()
    await second.start()
    assert first.is_leader and not second.is_leader
    assert isinstance(first.lock, PostgresLock) and first.lock.backend_pid is not None

    admin = await asyncpg.connect(**asyncpg_connect_args(url))
    try:  # what a network cut or a server restart does to the leader's session
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first.lock.backend_pid)
    finally:
        await admin.close()
    assert await first.wait_until(False, CHECK + SLACK)
    assert deposed == ["first"]
    assert await second.wait_until(True, RETRY + SLACK)
    # The one cut off keeps contending and does not take it back while the other lives.
    assert not await first.wait_until(True, RETRY * 4)


async def test_a_callback_registered_while_leading_runs_at_once(tmp_path: Path):
    leadership = Leadership(FileLock(tmp_path / "x.leader"), retry_seconds=RETRY)
    await leadership.start()
    ran = asyncio.Event()

    async def hook() -> None:
        ran.set()

    leadership.on_elected(hook)
    await asyncio.wait_for(ran.wait(), 2)
    await leadership.stop()
    assert not leadership.is_leader


async def test_a_failing_callback_does_not_stop_leadership(tmp_path: Path, caplog):
    leadership = Leadership(FileLock(tmp_path / "x.leader"), retry_seconds=RETRY)
    after: list[str] = []

    async def broken() -> None:
        raise RuntimeError("webhook registration failed")

    async def fine() -> None:
        after.append("ran")

    leadership.on_elected(broken)
    leadership.on_elected(fine)
    await leadership.start()
    assert leadership.is_leader and after == ["ran"]
    assert "leadership callback (elected) failed" in caplog.text
    await leadership.stop()


async def test_periodic_jobs_run_only_on_the_leader_and_move_with_it(svc, bot, key):
    """The outbox worker runs here either way; the ticks only once this process leads."""
    from scheduler.setup import leadership, start_background, stop_background

    other = Leadership(lock_for_database(svc.settings.database_url, key=key))
    await other.start()  # another process leads at first
    assert other.is_leader
    mine = Leadership(
        lock_for_database(svc.settings.database_url, key=key),
        retry_seconds=RETRY,
        check_seconds=CHECK,
    )
    application = bot.application
    background = await start_background(application, leadership=mine)
    try:
        assert leadership(application) is mine
        assert not background.periodic.active
        assert background.scheduler.get_job("prune_updates") is None  # a follower keeps ids
        assert not background.worker_task.done()  # delivering anyway

        await other.stop()
        assert await mine.wait_until(True, RETRY + SLACK)
        assert background.periodic.active
        plan = background.scheduler.get_job("plan")
        await asyncio.sleep(0.2)  # the immediate first tick has run: next one a minute on
        assert plan.next_run_time.timestamp() > time.time() + 50

        assert background.scheduler.get_job("prune_updates") is not None

        await mine.stop()  # stepping down takes the jobs away
        assert not background.periodic.active
        assert background.scheduler.get_job("analyze") is None
        assert background.scheduler.get_job("prune_updates") is None
    finally:
        await stop_background(application)
    assert leadership(application) is None


async def test_the_leader_forgets_update_ids_older_than_the_retention(svc, bot, key):
    """On election the pruning runs at once: ids past the retention go, newer ones stay."""
    from bot.models import ProcessedUpdate
    from scheduler.setup import start_background, stop_background

    now = svc.clock.now()
    async with svc.db.engine.begin() as conn:
        await conn.execute(
            ProcessedUpdate.__table__.insert(),
            [
                {"update_id": 1, "processed_at": now - timedelta(hours=49)},
                {"update_id": 2, "processed_at": now - timedelta(hours=47)},
            ],
        )

    async def kept() -> list[int]:
        async with svc.db.engine.connect() as conn:
            rows = await conn.execute(ProcessedUpdate.__table__.select())
            return sorted(row.update_id for row in rows)

    mine = Leadership(lock_for_database(svc.settings.database_url, key=key))
    background = await start_background(bot.application, leadership=mine)
    try:
        assert background.periodic.active
        deadline = time.monotonic() + 5
        while await kept() != [2] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await kept() == [2]
    finally:
        await stop_background(bot.application)
