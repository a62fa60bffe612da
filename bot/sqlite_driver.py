"""aiosqlite for SQLAlchemy with one thread hand-off per statement instead of three or four.

aiosqlite runs every call on its own thread: the caller queues a function, the thread runs
it, the event loop is woken to resume the caller. SQLAlchemy's adapter makes one such call
to open a cursor, one to execute, one to fetch the rows and one to close it. A hand-off
costs about as much as the statement (a queue put, a thread wake-up, the GIL passed both
ways, an event-loop turn), and on SQLite every write turn holds the one write connection
across all of them: measured on the pledge wizard, 60 hand-offs per typed answer for 9
statements. This adapter does the whole statement in one function on aiosqlite's thread
(execute, fetch, keep description/rowcount/lastrowid, close) and hands back plain values.

Everything else is SQLAlchemy's own aiosqlite dialect: it is given this module as its
DBAPI (``create_async_engine(..., module=dbapi())``), so the URL stays
``sqlite+aiosqlite://``. The cost is a dependency on aiosqlite's ``Connection._execute``
(its one way to run a function on its thread), checked by the tests on every run.
"""

from __future__ import annotations

import collections
import sqlite3
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, int, int | None, list[Any]]  # description, rowcount, lastrowid, rows


def _run_one(
    connection: sqlite3.Connection, begin: str | None, operation: str, parameters: Any
) -> _Outcome:
    """On aiosqlite's thread: the whole statement, cursor opened and closed here (after the
    BEGIN of its transaction, when it is the first statement)."""
    cursor = connection.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(
    connection: sqlite3.Connection, begin: str | None, operation: str, parameters: Any
) -> _Outcome:
    cursor = connection.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        cursor.executemany(operation, parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that lives on the event loop's side: each statement is one aiosqlite call,
    and what SQLAlchemy reads afterwards (rows, description, counts) is already here."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")
    _awaitable_cursor_close = False  # nothing to close on the thread

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._rows = collections.deque()
        self._soft_closed_memoized = {}
        self._description = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:  # type: ignore[override]
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(_run_one, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(_run_many, operation, seq_of_parameters)

    async def _run(self, function: Any, operation: Any, parameters: Any) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            begin, adapted._begin = adapted._begin, None
            outcome = await connection._execute(
                function, connection._conn, begin, operation, parameters
            )
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows)

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        return None


class StreamingCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """SQLAlchemy's cursor for `stream()` (rows fetched in parts, hand-offs as before), which
    also sends a pending BEGIN first, so a transaction that starts with a stream is one."""

    __slots__ = ()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        if adapted._begin is not None:
            async with adapted._execute_mutex:
                begin, adapted._begin = adapted._begin, None
                await self._cursor.execute(begin)
        return await super()._execute_async(operation, parameters)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Also saves the hand-offs of a transaction's edges: its BEGIN goes with its first
    statement, and a COMMIT or ROLLBACK with nothing begun (the pool's rollback when a
    connection comes back, a transaction that ran no statement) makes none at all. On the
    write connection each of these was a hand-off the next writer queued behind."""

    __slots__ = ("_begin",)
    _cursor_cls = OneHopCursor
    _ss_cursor_cls = StreamingCursor

    def __init__(self, dbapi: Any, connection: aiosqlite.Connection) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None

    def begin_with_next_statement(self, begin: str) -> None:
        """`begin` ("BEGIN IMMEDIATE") runs just before the next statement, in its hand-off."""
        self._begin = begin

    def _nothing_begun(self) -> bool:
        # Read on the loop's thread between statements: sqlite3 allows it, and the worker
        # thread runs nothing of this connection's while SQLAlchemy commits or rolls back.
        raw = self._connection._connection  # type: ignore[attr-defined]
        return raw is not None and not raw.in_transaction

    async def run_on_thread(self, function: Any, *args: Any) -> Any:
        """`function(sqlite3_connection, *args)` on aiosqlite's thread, between statements
        (bot.write_batch runs a whole group commit so)."""
        async with self._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            return await connection._execute(function, connection._conn, *args)

    def commit(self) -> None:
        self._begin = None
        if not self._nothing_begun():
            super().commit()

    def rollback(self) -> None:
        self._begin = None
        if not self._nothing_begun():
            super().rollback()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI adapter, handing out `OneHopConnection`s."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        creator_fn = kw.pop("async_creator_fn", None)
        connection = creator_fn(*arg, **kw) if creator_fn else self.aiosqlite.connect(*arg, **kw)
        # As SQLAlchemy's own adapter does: a forgotten connection must not keep the
        # interpreter alive at exit.
        thread = connection if isinstance(connection, Thread) else connection._thread
        thread.daemon = True
        return OneHopConnection(self, await_(connection))


def dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
