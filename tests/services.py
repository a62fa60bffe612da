"""Reaching the real services a test needs, or skipping with the reason printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bot.db import asyncpg_connect_args

ROOT = Path(__file__).resolve().parent.parent


async def postgres_url_or_skip() -> str:
    """TEST_DATABASE_URL when it names a PostgreSQL that answers; otherwise skip the test."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        print("skipped: TEST_DATABASE_URL does not name a PostgreSQL database")
        pytest.skip("TEST_DATABASE_URL does not name a PostgreSQL database")
    try:
        conn = await asyncpg.connect(**asyncpg_connect_args(url), timeout=3)
    except (OSError, asyncpg.PostgresError) as error:
        print(f"skipped: PostgreSQL unreachable ({type(error).__name__})")
        pytest.skip(f"PostgreSQL unreachable ({type(error).__name__})")
    await conn.close()
    return url


def admin_cli(svc, *args: str) -> subprocess.CompletedProcess:
    """The admin's command line, as its own process on the bot's database."""
    env = {**os.environ, "DATABASE_URL": svc.db.url, "CHUYENDE_LOCALE": "en"}
    env.pop("TELEGRAM_BOT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )
