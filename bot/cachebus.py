"""Hearing, on PostgreSQL, what other processes changed, so the read cache never serves it.

Every process LISTENs on one dedicated asyncpg connection; every write session NOTIFYs what
it touched inside its own transaction (:mod:`bot.readcache`). While the connection is down
the cache serves nothing (a missed notification would leave a stale entry for up to its
TTL); on each (re)connection the cache is cleared first, since notifications sent while
deaf are lost. The connection is checked every ``check_seconds`` so a silently broken
network is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from bot.db import asyncpg_connect_args
from bot.readcache import NOTIFY_CHANNEL, Change, ReadCache

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 5.0


class CacheBus:
    def __init__(self, url: str, cache: ReadCache, *, check_seconds: float = 5.0) -> None:
        self._connect_args = asyncpg_connect_args(url)
        self.cache = cache
        self.check_seconds = check_seconds
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connections = 0  # successful (re)connections, for the log and the tests

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend listening for this process (for operators and tests)."""
        conn = self._conn
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    async def start(self) -> None:
        """Listen before the first update is handled (a failure here only delays serving)."""
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _connect(self) -> bool:
        try:
            conn = await asyncpg.connect(**self._connect_args, timeout=_CONNECT_TIMEOUT)
            await conn.add_listener(NOTIFY_CHANNEL, self._heard)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            logger.warning("cache listener cannot connect (%s); cache off", type(error).__name__)
            return False
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._deaf())
        self._conn = conn
        self.cache.clear()  # whatever was sent while nobody listened is lost
        self.cache.listening = True
        self.connections += 1
        if self.connections > 1:
            logger.info("cache listener reconnected; cache cleared")
        return True

    def _heard(self, _conn, _pid, _channel, payload: str) -> None:
        self.cache.apply(Change.from_payload(payload))

    def _deaf(self) -> None:
        self.cache.listening = False
        self._lost.set()

    async def _keep_listening(self) -> None:
        while True:
            if self._conn is None or self._conn.is_closed():
                self._deaf()
                await self._close()
                if not await self._connect():
                    await asyncio.sleep(self.check_seconds)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.check_seconds)
            if self._conn is not None and not self._conn.is_closed():
                try:
                    await self._conn.fetchval("SELECT 1", timeout=_CONNECT_TIMEOUT)
                except (TimeoutError, OSError, asyncpg.PostgresError):
                    logger.warning("cache listener lost its connection; cache off")
                    self._deaf()
                    await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.cache.listening = False
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), _CONNECT_TIMEOUT)
