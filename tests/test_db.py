"""The database layer under concurrent writers, as the scheduler and handlers will be."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlmodel import select

from bot.models import ChatIdentity, ProcessedUpdate
from bot.services import updates
from bot.services.people import load_person


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
        assert await updates.seen(db, marks, "telegram", 5000 + n)  # known before the flush
    await marks.close()
    async with db.reader() as session:
        assert len((await session.exec(select(ProcessedUpdate))).all()) == 25
    assert await updates.seen(db, updates.DoneMarks(db), "telegram", 5024)
    assert not await updates.seen(db, marks, "telegram", 6000)


@pytest.mark.parametrize("failed", [True, False])
async def test_a_failed_read_only_update_stays_undone(db, clock, failed):
    marks = updates.DoneMarks(db)
    with updates.scope():
        updates.handling("telegram", 42, clock.now(), marks)
        if failed:
            updates.handler_failed()
    await marks.close()
    assert await updates.seen(db, marks, "telegram", 42) is not failed
