"""The database layer under concurrent writers, as the scheduler and handlers will be."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import select

from bot.db import READ_POOL, asyncpg_connect_args
from bot.leader import PostgresLock
from bot.models import ChatIdentity, ProcessedUpdate
from bot.services import updates
from bot.services.people import load_person
from tests.services import postgres_url_or_skip


async def test_sqlite_uses_wal_and_a_busy_timeout(db):
    if not db.sqlite:
        return
    async with db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 5000


async def test_concurrent_writers_never_see_database_is_locked(db, clock):
    """Forty tasks read-then-write at once; IMMEDIATE transactions queue instead of failing.

    Each is an update whose write carries its done mark in the same transaction.
    """
    marks = updates.DoneMarks(db)

    async def writer(n: int) -> None:
        with updates.scope():
            updates.handling("telegram", n, clock.now(), marks)
            async with db.session() as session:
                person = await load_person(session, "telegram", str(1000 + n), str(1000 + n),
                                           clock.now())
                person.identity.locale = "en" if n % 2 else "vi"
                session.add(person.identity)
                await session.commit()

    await asyncio.gather(*(writer(n) for n in range(40)))
    async with db.reader() as session:
        assert len((await session.exec(select(ChatIdentity))).all()) == 40
        assert len((await session.exec(select(ProcessedUpdate))).all()) == 40
        assert (await session.exec(text("SELECT 1"))).scalar() == 1


async def test_many_readers_at_once_all_answer_on_the_few_kept_connections(db):
    """Forty read-only turns at once each get their row; SQLite's readers stay a few threads.

    Each reader connection is a thread with its own malloc arena (bench/memory.py), so the
    read engine keeps a small fixed pool and the turns beyond it wait their turn.
    """
    if not db.sqlite:
        pytest.skip("PostgreSQL has no separate read engine")
    threads_before = threading.active_count()
    threads_seen: list[int] = []

    async def read(number: int) -> int:
        async with db.reader() as session:
            connection = await session.connection()
            threads_seen.append(threading.active_count())
            await asyncio.sleep(0.01)  # hold the connection, so that the turns overlap
            return (await connection.execute(text("SELECT :n"), {"n": number})).scalar_one()

    assert await asyncio.gather(*(read(n) for n in range(40))) == list(range(40))
    assert max(threads_seen) - threads_before <= READ_POOL["pool_size"]
    assert db.read_engine.pool.checkedin() == READ_POOL["pool_size"]  # kept, not closed


async def test_the_same_update_committed_twice_concurrently_wins_once(db, clock):
    """Ten deliveries of update 777 write at once: one commit wins, the nine roll back whole."""
    marks = updates.DoneMarks(db)

    async def deliver(n: int) -> bool:
        with updates.scope():
            updates.handling("telegram", 777, clock.now(), marks)
            async with db.session() as session:
                try:
                    await load_person(session, "telegram", str(2000 + n), str(2000 + n),
                                      clock.now())
                except updates.UpdateAlreadyHandled:
                    return False
                return True

    results = await asyncio.gather(*(deliver(n) for n in range(10)))
    assert results.count(True) == 1
    async with db.reader() as session:
        assert len((await session.exec(select(ChatIdentity))).all()) == 1
        assert len((await session.exec(select(ProcessedUpdate))).all()) == 1


async def test_read_only_updates_are_marked_done_in_one_group_commit(db, clock):
    marks = updates.DoneMarks(db)
    for n in range(25):
        with updates.scope():
            updates.handling("telegram", 5000 + n, clock.now(), marks)
            async with db.session() as session:  # reads only: no mark in its transaction
                await session.exec(select(ChatIdentity))
                await session.commit()
        # Known before the flush:
        assert await updates.seen(db, marks, "telegram", 5000 + n) is updates.Done.answered
    await marks.close()
    async with db.reader() as session:
        assert len((await session.exec(select(ProcessedUpdate))).all()) == 25
    assert await updates.seen(db, updates.DoneMarks(db), "telegram", 5024) is updates.Done.answered
    assert await updates.seen(db, marks, "telegram", 6000) is updates.Done.no


@pytest.mark.parametrize("dies", [False, True])
async def test_a_written_update_is_answered_when_its_handling_ends_not_when_it_commits(
    db, clock, dies
):
    """The mark goes in with the writes; that it answered, only once the handling is over.
    A handling that dies in between (cancelled, as a killed process's) stays unanswered."""
    marks = updates.DoneMarks(db)
    fresh = updates.DoneMarks(db)  # another process's view: only what the database says

    async def handle() -> None:
        with updates.scope():
            updates.handling("telegram", 888, clock.now(), marks)
            async with db.session() as session:
                await load_person(session, "telegram", "3001", "3001", clock.now())
                await session.commit()
            assert await updates.seen(db, fresh, "telegram", 888) is updates.Done.unanswered
            if dies:
                raise asyncio.CancelledError

    if dies:
        with pytest.raises(asyncio.CancelledError):
            await handle()
    else:
        await handle()
    await marks.close()
    expected = updates.Done.unanswered if dies else updates.Done.answered
    assert await updates.seen(db, fresh, "telegram", 888) is expected


@pytest.mark.parametrize("failed", [True, False])
async def test_a_failed_read_only_update_stays_undone(db, clock, failed):
    marks = updates.DoneMarks(db)
    with updates.scope():
        updates.handling("telegram", 42, clock.now(), marks)
        if failed:
            updates.handler_failed()
    await marks.close()
    expected = updates.Done.no if failed else updates.Done.answered
    assert await updates.seen(db, marks, "telegram", 42) is expected


# -- the SQLite driver: one thread hand-off per statement (bot/sqlite_driver.py) ----------


@pytest.fixture
def hand_offs(db, monkeypatch):
    """Counts the calls run on aiosqlite's thread (SQLite only)."""
    if not db.sqlite:
        pytest.skip("aiosqlite is SQLite's driver")
    import aiosqlite

    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_sqlite_statement_is_one_hand_off_to_the_driver_thread(db, clock, hand_offs):
    """Each hand-off holds the one write connection; SQLAlchemy's adapter made 3 or 4."""
    async with db.engine.begin() as conn:
        await conn.execute(
            ProcessedUpdate.__table__.insert(),
            [{"channel": "t", "update_id": n, "processed_at": clock.now()} for n in range(3)],
        )
    async with db.engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")  # the connection's setup is done before counting
        hand_offs.clear()
        rows = (await conn.execute(select(ProcessedUpdate.update_id))).scalars().all()
        assert sorted(rows) == [0, 1, 2]
        assert len(hand_offs) == 1
        hand_offs.clear()
        changed = await conn.execute(
            ProcessedUpdate.__table__.delete().where(ProcessedUpdate.update_id > 0)
        )
        assert changed.rowcount == 2
        assert len(hand_offs) == 1


async def test_a_failing_sqlite_statement_raises_and_leaves_the_connection_usable(db, clock):
    """The duplicate-update path relies on IntegrityError surfacing as SQLAlchemy's."""
    from sqlalchemy.exc import IntegrityError

    if not db.sqlite:
        pytest.skip("aiosqlite is SQLite's driver")
    row = {"channel": "t", "update_id": 1, "processed_at": clock.now()}
    async with db.engine.begin() as conn:
        await conn.execute(ProcessedUpdate.__table__.insert(), row)
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(ProcessedUpdate.__table__.insert(), row)
    async with db.engine.begin() as conn:
        inserted = await conn.execute(
            ProcessedUpdate.__table__.insert(), {**row, "update_id": 2}
        )
        assert inserted.rowcount == 1
        count = await conn.scalar(text("SELECT count(*) FROM processedupdate"))
    assert count == 2


async def test_a_sqlite_write_transaction_is_one_hand_off_per_statement_and_its_commit(
    db, clock, hand_offs
):
    """BEGIN IMMEDIATE travels with the first statement; the pool's rollback of a connection
    coming back with nothing begun makes no hand-off (each was a wait for the next writer)."""
    async with db.session() as session:
        await session.exec(text("SELECT 1"))  # the connection's setup is done before counting
    hand_offs.clear()
    async with db.session() as session:
        session.add(ProcessedUpdate(channel="t", update_id=5, processed_at=clock.now()))
        await session.commit()
    assert hand_offs == ["_run_one", "commit"]
    async with db.reader() as session:
        assert (await session.get(ProcessedUpdate, ("t", 5))) is not None


def _begin_immediate(path: str) -> None:
    """Another process taking the write lock, waiting at most 0.1 s."""
    connection = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
    finally:
        connection.close()


async def test_a_sqlite_write_transaction_still_takes_the_write_lock_first(db, clock):
    """With BEGIN deferred to the first statement, a second writer still waits for the first
    (IMMEDIATE), and the reader still sees only what was committed."""
    if not db.sqlite:
        pytest.skip("SQLite's write lock")
    first = await db.engine.connect()
    try:
        await first.begin()
        await first.execute(
            ProcessedUpdate.__table__.insert(),
            {"channel": "t", "update_id": 1, "processed_at": clock.now()},
        )
        async with db.reader() as session:
            assert (await session.get(ProcessedUpdate, ("t", 1))) is None
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await asyncio.to_thread(_begin_immediate, make_url(db.url).database)
        await first.commit()
    finally:
        await first.close()
    async with db.reader() as session:
        assert (await session.get(ProcessedUpdate, ("t", 1))) is not None


async def test_a_sqlite_transaction_that_starts_with_a_stream_still_holds_the_write_lock(
    db, clock
):
    """An export streams its rows; the deferred BEGIN must not be skipped by the stream."""
    if not db.sqlite:
        pytest.skip("SQLite's write lock")
    async with db.session() as session:
        result = await session.stream(select(ProcessedUpdate.update_id))
        assert [row async for row in result] == []
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await asyncio.to_thread(_begin_immediate, make_url(db.url).database)
        session.add(ProcessedUpdate(channel="t", update_id=9, processed_at=clock.now()))
        await session.commit()
    async with db.reader() as session:
        assert (await session.get(ProcessedUpdate, ("t", 9))) is not None


def test_direct_postgresql_connections_take_the_url_as_the_engine_does():
    """The leader lock, the rate store and the cache listener connect with the engine's
    URL: its options reach asyncpg, and the dialect's own are not sent to PostgreSQL."""
    url = (
        "postgresql+asyncpg://bot:s%40crét@db.example:6432/union"
        "?ssl=require&prepared_statement_cache_size=0"
    )
    assert asyncpg_connect_args(url) == {
        "host": "db.example",
        "port": 6432,
        "user": "bot",
        "password": "s@crét",
        "database": "union",
        "ssl": "require",
    }
    with pytest.raises(ValueError):
        asyncpg_connect_args("sqlite+aiosqlite:///chuyende.db")


async def test_the_leader_lock_connects_with_an_engine_only_option_in_the_url():
    """Behind PgBouncer the URL carries `prepared_statement_cache_size=0`; as a DSN, asyncpg
    sent it to PostgreSQL as a setting it does not know, and no process could lead."""
    url = await postgres_url_or_skip()
    sep = "&" if "?" in url else "?"
    lock = PostgresLock(f"{url}{sep}prepared_statement_cache_size=0", key=7_340_001)
    try:
        assert await lock.try_acquire()
    finally:
        await lock.release()
