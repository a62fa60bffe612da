"""Engines and sessions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.read_batch import ReadBatch
from bot.write_batch import WriteBatch

BUSY_TIMEOUT_MS = 10_000


class WriteSession(Session):
    """The sync session behind `Database.session()`: its own class, so hooks on the
    sessions that write (bot.services.updates) never run for readers or other code."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _setup_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    """WAL lets readers run beside the writer; IMMEDIATE takes the write lock up front.

    A deferred transaction that reads and then writes can fail with "database is locked"
    when another writer got in between; taking the lock at BEGIN makes it wait instead
    (up to the busy timeout). Read-only sessions use a deferred engine so reads never queue.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):
        # Sent with the transaction's first statement, in one hand-off (bot.sqlite_driver).
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        conn.connection.dbapi_connection.begin_with_next_statement(begin)


# The read engine keeps a fixed pool of 4 connections, opened once and never closed:
# SQLAlchemy's default (5 kept, 10 overflow closed when given back) opened and closed
# them all the time under load, each with a thread, a SQLite connection, its schema and a
# cold page cache, and malloc kept what those freed. Four, not 15: each connection is a
# thread with its own glibc malloc arena, whose free lists grew under load, and the hot
# reads go grouped, many turns to one connection (bot.read_batch), so more readers do not
# answer faster. bench/memory.py --heap, 30,000 updates: 140.1 MB at the end with 4
# (7 threads, 6 malloc arenas) against 145.6 MB with 15 (18 threads, 16 arenas); a short
# deadline-day A/B gave the same updates/s within the machine's noise (bench/README).
READ_POOL = {"pool_size": 4, "max_overflow": 0}


def make_engine(url: str, *, immediate: bool = True, echo: bool = False) -> AsyncEngine:
    if is_sqlite(url):
        from bot import sqlite_driver  # here: a PostgreSQL process never loads aiosqlite

        # The write engine keeps one connection: SQLite takes one writer at a time anyway,
        # and waiting for the pool's connection is an asyncio queue (the next writer starts
        # the moment the last commits), where waiting on the lock is SQLite's busy handler
        # sleeping and polling (1, 2, 5… 100 ms), which was most of an update's time.
        # The busy timeout still covers writers in other processes (the CLI).
        pool = {"pool_size": 1, "max_overflow": 0} if immediate else READ_POOL
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
            module=sqlite_driver.dbapi(),  # one thread hand-off per statement
            **pool,
        )
        _setup_sqlite(engine, immediate=immediate)
        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """Owns the engines; `session()` for work that writes, `reader()` for pure reads."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = make_engine(url, immediate=True, echo=echo)
        # PostgreSQL needs no second engine: its readers never block on writers.
        self.read_engine = (
            make_engine(url, immediate=False, echo=echo) if self.sqlite else self.engine
        )
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, sync_session_class=WriteSession,
            expire_on_commit=False,
        )
        self._readers = async_sessionmaker(
            self.read_engine, class_=AsyncSession, expire_on_commit=False
        )
        # Wizard steps' writes go in group commits (bot.write_batch), their reads in grouped
        # reads (bot.read_batch): on SQLite because its one write connection is a queue, on
        # PostgreSQL because a step through the ORM costs the event loop several times more.
        self.write_batch = WriteBatch(self)
        self.read_batch = ReadBatch(self)

    def session(self) -> AsyncSession:
        """A session for a unit of work (`async with db.session() as session`); the service
        it is handed to commits."""
        return self._sessions()

    def reader(self) -> AsyncSession:
        """A session on the read engine (`async with db.reader() as session`). The session
        is its own context manager: a wrapper would cost every read-only update a frame."""
        return self._readers()

    async def analyze(self) -> None:
        """Refresh SQLite's planner statistics.

        Without them SQLite takes the (channel, user id) index as selective and a reminder
        tick at a million members sorts every due row to keep the first batch (0.8 s instead
        of 0.02 s). PostgreSQL's autovacuum keeps its own statistics.
        """
        if self.sqlite:
            async with self.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")

    async def create_all(self) -> None:
        """Build the schema from the models (tests and throwaway demos; real installs migrate)."""
        from sqlmodel import SQLModel

        from bot import models  # noqa: F401  (registers the tables)

        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)

    async def drop_all(self) -> None:
        from sqlmodel import SQLModel

        from bot import models  # noqa: F401

        async with self.engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)

    async def dispose(self) -> None:
        await self.write_batch.close()  # answers handed over are stored, not cut off
        await self.read_batch.close()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


# Options of SQLAlchemy's asyncpg dialect itself; everything else in the URL's query is
# handed to asyncpg.connect, as the engine does.
_DIALECT_ONLY_OPTIONS = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_fallback",
    "async_creator_fn",
)


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """The keyword arguments of `asyncpg.connect` for a SQLAlchemy PostgreSQL URL, taken
    from the URL as SQLAlchemy's engine takes them (host, port, user, password, database,
    and the query's options such as `ssl`).

    The leader lock, the shared rate limiter and the cache listener talk to PostgreSQL
    directly: one statement each, on a connection they keep. A DSN would hand asyncpg the
    engine's own options (`prepared_statement_cache_size=0`, usual behind PgBouncer) as
    server settings, which PostgreSQL refuses.
    """
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("not a PostgreSQL URL")
    _, kwargs = PGDialect_asyncpg().create_connect_args(parsed)
    for option in _DIALECT_ONLY_OPTIONS:
        kwargs.pop(option, None)
    return kwargs


# Every process that writes (the bot, the command line, a migration's data step) must tell
# the read caches what it changed; the hooks live with the cache and attach to WriteSession.
from bot import readcache as _readcache  # noqa: E402, F401
