"""Leadership for the periodic jobs: one process at a time runs them, another takes over fast.

Several bot processes share one database. The planning and broadcast ticks and the daily
ANALYZE must run in only one of them (two planners would race for the same due rows; the
outbox claim is safe either way). :class:`Leadership` holds a lock that the operating system
or the database server frees when the holder dies, so a ``kill -9`` needs no lease to expire:

* PostgreSQL: ``pg_try_advisory_lock(key)`` on one dedicated connection, kept open for as long
  as the process leads. It is a session-level lock, so PostgreSQL drops it the moment the
  connection goes (the process died, the network broke, an operator terminated the backend).
  The leader runs ``SELECT 1`` on that connection every ``check_seconds``; if that fails it
  steps down at once, since it can no longer tell whether the lock is still its own.
* SQLite on a file: ``fcntl.flock`` on ``<database>.leader`` beside the database file. The
  kernel releases a flock when the last descriptor of the open file closes, which includes
  the process being killed. SQLite's own locks cannot serve: holding a write transaction open
  would block every writer, and a PID file survives a ``kill -9`` and would have to be
  second-guessed. (SQLite is one host by nature, so a host-local lock is enough.)
* SQLite in memory: the database lives in this process only, so the process always leads.

The others retry every ``retry_seconds``. With the defaults (5 s each) a dead leader is
replaced within about 5 s, and a leader cut off from PostgreSQL steps down within about 5 s
plus the check's timeout; both well within the minute the periodic jobs can afford.

Callbacks: :meth:`Leadership.on_elected` and :meth:`Leadership.on_deposed` take coroutine
functions without arguments, run in order each time this process becomes leader or stops
being one. A callback registered while the process already leads runs at once, so wiring
something to "became leader" is one line wherever it happens. A callback that raises is
logged and does not stop the others or the leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url

from bot.db import asyncpg_connect_args, is_sqlite

__all__ = [
    "DEFAULT_KEY",
    "FileLock",
    "LeaderLock",
    "Leadership",
    "PostgresLock",
    "ProcessLock",
    "lock_for_database",
]

log = logging.getLogger(__name__)

#: The advisory lock key of the periodic jobs ("chuyende" folded into a signed 64-bit int).
DEFAULT_KEY = int.from_bytes(b"chuyende", "big") - 2**63
_CONNECT_TIMEOUT = 5.0

# If the leader's host drops off the network, its socket is never closed, and PostgreSQL
# would keep the session (and the lock) until the OS's keepalive gives up, two hours by
# default. These settings make the server probe this one idle session after 10 s and drop it
# after three unanswered probes 5 s apart, so the lock is free again within about 25 s.
_SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

Callback = Callable[[], Awaitable[None]]


class LeaderLock(Protocol):
    """A lock that its holder's death releases. ``try_acquire`` never waits for it."""

    async def try_acquire(self) -> bool: ...

    async def alive(self) -> bool:
        """Whether the lock is still certainly held (asked only while holding it)."""
        ...

    async def release(self) -> None: ...


class PostgresLock:
    """``pg_try_advisory_lock`` on a connection of its own, held while leading."""

    def __init__(self, url: str, key: int = DEFAULT_KEY, *, timeout: float = _CONNECT_TIMEOUT):
        self._connect_args = asyncpg_connect_args(url)
        self.key = key
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                **self._connect_args, timeout=self.timeout, server_settings=_SERVER_KEEPALIVE
            )
        try:
            got = await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self.key, timeout=self.timeout
            )
        except BaseException:  # failed or cancelled: whether we got it is unknown, so let go
            conn, self._conn = self._conn, None
            conn.terminate()
            raise
        if not got:
            # Keep no idle connection per waiting process; the next try opens a new one.
            await self._close()
        return bool(got)

    async def alive(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=self.timeout)
        except Exception:  # whatever the reason, it can no longer vouch for the lock
            return False
        return True

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding the lock (tests terminate it to cut the leader off)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def release(self) -> None:
        # Closing the session releases the advisory lock; an explicit unlock would need a
        # working connection, which is exactly what may be missing here.
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), self.timeout)
        except Exception:  # a broken connection cannot say goodbye; drop it
            conn.terminate()


class FileLock:
    """``fcntl.flock`` on a file beside the SQLite database (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def alive(self) -> bool:
        return self._fd is not None  # nothing outside this process can take a flock away

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock


class ProcessLock:
    """In-memory SQLite: the database is this process's own, so it always leads."""

    async def try_acquire(self) -> bool:
        return True

    async def alive(self) -> bool:
        return True

    async def release(self) -> None:
        return None


def lock_for_database(url: str, *, key: int = DEFAULT_KEY) -> LeaderLock:
    """The lock that fits the database: advisory lock, flock beside the file, or none."""
    if not is_sqlite(url):
        return PostgresLock(url, key)
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return ProcessLock()
    return FileLock(f"{database}.leader")


class Leadership:
    """Contends for ``lock``; runs the callbacks when this process gains or loses it.

    Args:
        lock: a :class:`LeaderLock` (see :func:`lock_for_database`).
        retry_seconds: how often a follower tries to take the lock.
        check_seconds: how often the leader checks that it still holds it.
    """

    def __init__(
        self, lock: LeaderLock, *, retry_seconds: float = 5.0, check_seconds: float = 5.0
    ) -> None:
        if retry_seconds <= 0 or check_seconds <= 0:
            raise ValueError("retry_seconds and check_seconds must be positive")
        self.lock = lock
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self._elected: list[Callback] = []
        self._deposed: list[Callback] = []
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._failures_logged = False
        self._spawned: set[asyncio.Task[None]] = set()  # strong references until they finish

    @classmethod
    def for_database(
        cls,
        url: str,
        *,
        key: int = DEFAULT_KEY,
        retry_seconds: float = 5.0,
        check_seconds: float = 5.0,
    ) -> Leadership:
        return cls(
            lock_for_database(url, key=key),
            retry_seconds=retry_seconds,
            check_seconds=check_seconds,
        )

    @property
    def is_leader(self) -> bool:
        return self._leading

    def on_elected(self, callback: Callback) -> None:
        """Run ``callback`` each time this process becomes leader (now, if it leads already)."""
        self._elected.append(callback)
        if self._leading:
            self._spawn(callback, "elected")

    def on_deposed(self, callback: Callback) -> None:
        """Run ``callback`` each time this process stops leading (also at :meth:`stop`)."""
        self._deposed.append(callback)

    async def start(self) -> None:
        """Try once now (so a lone process leads before this returns), then keep contending."""
        if self._task is not None:
            return
        self._stopping.clear()
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Stop contending; if leading, run the deposed callbacks and release the lock."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._leading:
            await self._step_down("stopping")
        else:
            await self.lock.release()  # a connection opened by a try cut short by the stop

    async def wait_until(self, leading: bool, timeout: float) -> bool:
        """Wait until ``is_leader == leading`` or ``timeout`` passes; returns whether it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._leading != leading:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            pause = self.check_seconds if self._leading else self.retry_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():
                return
            if self._leading:
                if not await self.lock.alive():
                    log.warning("lost the periodic-jobs lock's connection: stepping down")
                    await self._step_down("lock lost")
            else:
                await self._attempt()

    async def _attempt(self) -> None:
        try:
            got = await self.lock.try_acquire()
        except Exception as error:  # the database is away: keep trying, say so once
            if not self._failures_logged:
                name = type(error).__name__
                log.warning("cannot reach the periodic-jobs lock (%s); retrying", name)
                self._failures_logged = True
            return
        if self._failures_logged:
            log.info("periodic-jobs lock reachable again")
            self._failures_logged = False
        if got:
            self._leading = True
            self._changed.set()
            log.info("leading the periodic jobs (pid %s)", os.getpid())
            for callback in list(self._elected):
                await self._call(callback, "elected")

    async def _step_down(self, why: str) -> None:
        self._leading = False
        self._changed.set()
        for callback in list(self._deposed):
            await self._call(callback, "deposed")
        try:
            await self.lock.release()
        except Exception:
            log.exception("releasing the periodic-jobs lock failed")
        log.info("no longer leading the periodic jobs (%s)", why)

    async def _call(self, callback: Callback, what: str) -> None:
        try:
            await callback()
        except Exception:
            log.exception("a leadership callback (%s) failed", what)

    def _spawn(self, callback: Callback, what: str) -> None:
        task = asyncio.get_running_loop().create_task(self._call(callback, what))
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
