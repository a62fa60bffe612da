"""Callers' requests gathered while one batch runs, to go together in the next.

Both group paths are this (bot.write_batch for writes, bot.read_batch for reads): the first
request starts a drain task; whatever arrives while a batch runs waits for the next one, so
batches grow with the load (on PostgreSQL up to three batches run at once, each on its own
connection); each caller gets its own outcome, or the error that stopped its whole
batch. A batch is one function on one pooled connection, in one transaction: on
SQLite run on the connection's aiosqlite thread (bot.sqlite_driver), on PostgreSQL awaited
on its asyncpg connection.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Dialect

Item = TypeVar("Item")
# Batches at once on PostgreSQL, each on its own connection. A batch there mostly waits for
# the server's answers, a round trip a statement; measured on the wizard mix
# (bench/throughput.py), three in flight took it from about 210 to 330 steps/s where one
# left the event loop idle a quarter of the time, and a fourth added nothing.
POSTGRESQL_LANES = 3

# What the statements are compiled for: SQLite's SQL and its qmark parameters, whichever
# driver runs them (the type bind processing is the same for pysqlite and aiosqlite), and
# PostgreSQL's $n parameters with the casts and type processing SQLAlchemy's asyncpg
# dialect gives them (its connections carry the matching JSON codecs).
SQLITE: Dialect = sqlite.dialect()
POSTGRESQL: Dialect = PGDialect_asyncpg()


def driver_error(dialect: Dialect, error: BaseException, sql: str, params: Any) -> BaseException:
    """A driver's error as SQLAlchemy's, as the ORM path raises it (an IntegrityError, an
    OperationalError…): the webhook tells a transient failure from a bug by these classes."""
    if dialect.name == SQLITE.name:
        import sqlite3

        if isinstance(error, sqlite3.Error):
            return sa_exc.DBAPIError.instance(sql, params, error, sqlite3.Error)
        return error
    import asyncpg

    if not isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        return error
    # SQLAlchemy's asyncpg adapter maps the driver's classes to DBAPI ones; asked here
    # through the class method it raises them from.
    from sqlalchemy.dialects.postgresql.asyncpg import (
        AsyncAdapt_asyncpg_connection,
        AsyncAdapt_asyncpg_dbapi,
    )

    dbapi = _asyncpg_dbapi()
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except AsyncAdapt_asyncpg_dbapi.Error as translated:
        return sa_exc.DBAPIError.instance(sql, params, translated, dbapi.Error,
                                          dialect=POSTGRESQL)
    except Exception:  # not one it maps: as it came
        return error
    return error


@functools.cache
def _asyncpg_dbapi() -> Any:
    return PGDialect_asyncpg.import_dbapi()


class Batcher(Generic[Item]):
    """Requests (each a sequence of statements) queued, and run a batch at a time as
    `function(connection, items, gone)` on a connection of `engine`, which returns each
    item's outcome (`gone[i]()`: whether item i's caller was cancelled meanwhile). On
    SQLite a function given the sqlite3 connection, on its thread; on PostgreSQL a
    coroutine function given the asyncpg connection, and `sent` to count in."""

    max_items = 256
    around_item = 0  # statements a batch adds around each request (a savepoint's two)

    def __init__(self, engine: Any, function: Callable[..., Any]) -> None:
        self._engine = engine
        self._function = function
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Batches run at once: SQLite has one writer, so one.
        self._lanes = 1 if engine.dialect.name == SQLITE.name else POSTGRESQL_LANES
        # Done so far (bench/throughput.py prints them): transactions, the requests in
        # them, and their round trips to the database (each request's statements and what
        # wraps them, each BEGIN and COMMIT; see `statements`).
        self.batches = 0
        self.turns = 0
        self._statements = 0
        # On PostgreSQL the function is also given this, and counts in it what it sent
        # ("round_trips": pipelined, many statements go in one) and what else it did.
        self.sent: Counter[str] = Counter()

    @property
    def statements(self) -> int:
        """Statements sent to the database so far, each a round trip (one pipelined
        round trip of many counts once)."""
        return self._statements + self.sent["round_trips"]

    @property
    def waiting(self) -> int:
        """Requests handed over and not answered yet."""
        return len(self._pending) + self._running

    @property
    def running(self) -> int:
        """Requests in batches under way."""
        return self._running

    async def _submit(self, item: Item) -> Any:
        """Queue `item`; its outcome once its batch ran (an exception outcome is raised)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        # A drain that has returned is done at once but leaves the set only on the loop's
        # next turn: counted until then, it would leave this request with no drain at all.
        if sum(not task.done() for task in self._tasks) < self._lanes:
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        """Wait for the batches under way (before the engine that runs them is disposed)."""
        if self._tasks:
            await asyncio.shield(asyncio.gather(*self._tasks))

    async def _drain(self) -> None:
        while self._pending:
            limit = self.max_items
            batch, self._pending = self._pending[:limit], self._pending[limit:]
            self._running += len(batch)
            try:
                await self._run(batch)
            except Exception as error:  # the batch as a whole failed: each caller is told
                for _, future in batch:
                    if not future.done():
                        future.set_result(self._failed(error))
            finally:
                self._running -= len(batch)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        async with self._engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            # A request cancelled while its batch waited for the connection (its update is
            # being abandoned) is withdrawn: a turn's writes only go in if it can still
            # reply after them.
            live = [(item, future) for item, future in batch if not future.done()]
            items = [item for item, _ in live]
            if not live:
                return
            # And one cancelled while its batch runs (waiting on a row lock, say) is undone
            # if the batch can still tell: each function asks before a request's RELEASE.
            gone = [future.done for _, future in live]
            if self._engine.dialect.name == SQLITE.name:
                outcomes = await pooled.dbapi_connection.run_on_thread(
                    self._function, items, gone
                )
            else:
                outcomes = await self._function(pooled.driver_connection, items, gone,
                                                self.sent)
        self.batches += 1
        self.turns += len(live)
        self._statements += self._counted(items)
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if not future.done():  # cancelled after its part was done: that stands
                future.set_result(outcome)

    def _counted(self, items: list[Item]) -> int:
        """The statements a batch of `items` ran on SQLite: theirs, and what wraps them
        (PostgreSQL's functions count their own, in `sent`)."""
        if self._engine.dialect.name != SQLITE.name:
            return 0
        around = self.around_item
        return self._wrapping(items) + sum(len(item) + around for item in items)  # type: ignore[arg-type]

    def _wrapping(self, items: list[Item]) -> int:
        """Statements a batch of `items` adds around them all: its BEGIN and COMMIT."""
        return 2

    def _failed(self, error: Exception) -> BaseException:
        """What a caller is given when its batch failed whole."""
        return error
