"""Fixtures: a real database, the Bot API emulator, and the real Application polling it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.clock import Clock
from bot.context import Services
from bot.db import Database
from bot.runtime import make_services
from bot.settings import Settings
from tests import factories

TOKEN = "123456789:TEST-token-for-the-emulator-only"
# 08:00 on 5/4/2024 in Vietnam: inside the 2024 campaign, four days before the pledge's last day.
START = datetime(2024, 4, 5, 1, 0, tzinfo=UTC)


def _database_urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        urls.append("postgresql")
    return urls


@pytest.fixture(params=_database_urls())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite in a temporary file always; PostgreSQL too when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return os.environ["TEST_DATABASE_URL"]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.drop_all()
    await database.create_all()
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(Settings().tz, start=START)


@pytest.fixture
async def emulator():
    from bot.channels.emulator import BotApiEmulator

    emu = BotApiEmulator(token=TOKEN, bot_username="chuyende_test_bot")
    await emu.start()
    yield emu
    await emu.stop()


def bot_settings(emulator, database_url: str, **extra) -> Settings:
    """The tests' settings (the emulator, this database, Vietnamese), plus `extra` variables."""
    return Settings(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=emulator.base_url,
        DATABASE_URL=database_url,
        CHUYENDE_LOCALE="vi",
        CHUYENDE_BACKGROUND=False,  # tests drive the ticks and the outbox by hand
        _env_file=None,
        **extra,
    )


@pytest.fixture
def settings(emulator, database_url: str) -> Settings:
    return bot_settings(emulator, database_url)


@pytest.fixture
def svc(settings: Settings, db: Database, clock: Clock) -> Services:
    return make_services(settings, clock=clock, db=db)


class RunningBot:
    """The real Application long-polling the emulator; `restart()` builds a fresh one."""

    def __init__(self, svc: Services) -> None:
        from bot.app import UPDATER_STOP_S

        self.svc = svc
        self._running = None
        self.stop_within = UPDATER_STOP_S  # how long a stop waits for the polling loop

    async def start(self) -> None:
        from bot.app import build_application, polling

        self._running = polling(
            build_application(self.svc), poll_timeout=1, stop_within=self.stop_within
        )
        self.application = await self._running.__aenter__()

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.__aexit__(None, None, None)
            self._running = None

    async def restart(self) -> None:
        """A new process, as far as the bot can tell: nothing carried over in memory."""
        await self.stop()
        await self.start()


@pytest.fixture
async def bot(svc: Services, emulator) -> AsyncIterator[RunningBot]:
    svc.owns_db = False
    running = RunningBot(svc)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def union(svc: Services) -> factories.DemoUnion:
    """Province → district → two grassroots unions, the 2024 campaign in force at the top."""
    async with svc.db.session() as session:
        return await factories.make_union(session, svc)


@asynccontextmanager
async def sandbox(tmp_path: Path):
    """What `chuyende demo` runs, on a free port: emulator + page, seeded union, real bot."""
    from bot.channels.emulator import BotApiEmulator
    from bot.demo import DEMO_BOT_USERNAME, DEMO_TOKEN, seed_demo
    from bot.migrate import upgrade_async

    emu = BotApiEmulator(token=DEMO_TOKEN, bot_username=DEMO_BOT_USERNAME, page=True)
    await emu.start()
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await upgrade_async(url)
    settings = Settings(
        TELEGRAM_BOT_TOKEN=DEMO_TOKEN,
        TELEGRAM_API_BASE_URL=emu.base_url,
        DATABASE_URL=url,
        _env_file=None,
    )
    service = make_services(settings, now=START)
    async with service.db.session() as session:
        personas = await seed_demo(session, service)
    emu.set_personas([p.as_dict() for p in personas])
    running = RunningBot(service)
    await running.start()
    try:
        yield service, emu.base_url, personas
    finally:
        await running.stop()
        await emu.stop()
