"""The database layer under concurrent writers, as the scheduler and handlers will be."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlmodel import select

from bot.models import ChatIdentity, ProcessedUpdate
from bot.services.people import claim_update, load_person


async def test_sqlite_uses_wal_and_a_busy_timeout(db):
    if not db.sqlite:
        return
    async with db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 5000


async def test_concurrent_writers_never_see_database_is_locked(db, clock):
    """Forty tasks read-then-write at once; IMMEDIATE transactions queue instead of failing."""

    async def writer(n: int) -> None:
        async with db.session() as session:
            person = await load_person(session, "telegram", str(1000 + n), str(1000 + n),
                                       clock.now())
            person.identity.locale = "en" if n % 2 else "vi"
            session.add(person.identity)
            await session.commit()
        async with db.session() as session:
            await claim_update(session, "telegram", n, clock.now())

    await asyncio.gather(*(writer(n) for n in range(40)))
    async with db.reader() as session:
        assert len((await session.exec(select(ChatIdentity))).all()) == 40
        assert len((await session.exec(select(ProcessedUpdate))).all()) == 40
        assert (await session.exec(text("SELECT 1"))).scalar() == 1


async def test_the_same_update_claimed_twice_concurrently_wins_once(db, clock):
    async def claim() -> bool:
        async with db.session() as session:
            return await claim_update(session, "telegram", 777, clock.now())

    results = await asyncio.gather(*(claim() for _ in range(10)))
    assert results.count(True) == 1
