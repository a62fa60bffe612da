"""Reaching the real services a test needs, or skipping with the reason printed."""

from __future__ import annotations

import os

import asyncpg
import pytest

from bot.db import asyncpg_dsn


async def postgres_url_or_skip() -> str:
    """TEST_DATABASE_URL when it names a PostgreSQL that answers; otherwise skip the test."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        print("skipped: TEST_DATABASE_URL does not name a PostgreSQL database")
        pytest.skip("TEST_DATABASE_URL does not name a PostgreSQL database")
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError) as error:
        print(f"skipped: PostgreSQL unreachable ({type(error).__name__})")
        pytest.skip(f"PostgreSQL unreachable ({type(error).__name__})")
    await conn.close()
    return url
