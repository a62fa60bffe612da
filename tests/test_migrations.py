"""Migrations: an empty database upgrades to head and then matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from bot import models  # noqa: F401
from bot.db import Database
from bot.migrate import heads, upgrade_async


async def _empty(database_url: str) -> None:
    database = Database(database_url)
    await database.drop_all()
    async with database.engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        # The shared send budget's scratch table is made at run time (bot/ratestore.py), on
        # purpose outside the migrations; other tests leave it behind.
        await conn.execute(text("DROP TABLE IF EXISTS chuyende_rate_bucket"))
        if conn.dialect.name == "postgresql":  # enum types outlive their tables
            for enum in ("unitlevel", "role", "owedby", "pledgestatus", "outboxstatus",
                         "reminderstatus", "noticekind"):
                await conn.execute(text(f"DROP TYPE IF EXISTS {enum}"))
    await database.dispose()


async def test_upgrade_from_empty_matches_the_models(database_url):
    await _empty(database_url)
    await upgrade_async(database_url)
    database = Database(database_url)
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata
            )
        )
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    await database.dispose()
    assert diff == [], f"models and migrations differ: {diff}"
    assert version == heads()[0]
    # Upgrading again is a no-op, as an admin re-running `chuyende db upgrade` expects.
    await upgrade_async(database_url)
    await _empty(database_url)


def test_there_is_exactly_one_head():
    assert len(heads()) == 1, f"several Alembic heads: {heads()}; merge them"
