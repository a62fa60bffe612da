"""Group commit on SQLite: the writes of many chats' turns in one transaction, one hand-off.

SQLite has one write connection (bot.db), and a turn that reads, decides and writes through
the ORM holds it for all of that: on the deadline day every member's typed answer queues
behind every other. A turn on this path reads on a reader, decides, and hands over only
its writes: a few prepared statements, each with the row count it must have. Whatever is
handed over while one batch runs goes in the next, so the batches grow with the load.

A batch is one function on aiosqlite's thread: BEGIN IMMEDIATE; for each turn a SAVEPOINT,
its statements, and RELEASE, or ROLLBACK TO when a statement changed another number of rows
than expected (the row moved on since the turn read it, or its done mark is already there)
or failed; then one COMMIT. A turn's writes therefore go in whole or not at all, the others'
go in regardless, and each turn is told which: applied, or the index of the statement that
did not match (the turn then redoes its work on the ORM path, under the lock), or the error.
Nothing is stored before the COMMIT returns, and a turn replies only after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, literal_column, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from bot.batching import Batcher

# Turns per transaction at most: a batch holds the write lock (and the CLI's writers wait
# on it) for its whole length; at about 0.1 ms a turn this is a few tens of milliseconds.
MAX_TURNS = 256
APPLIED = None
# What the statements are compiled for: SQLite's SQL and its qmark parameters, whichever
# driver runs them (the type bind processing is the same for pysqlite and aiosqlite).
SQLITE: Dialect = sqlite.dialect()


@dataclass(frozen=True)
class Prepared:
    """A Core statement compiled once for SQLite: its SQL, and how to bind values to it
    (each through its column type's own bind processing: JSON, UTC datetimes, enums)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    # Parameters the statement itself fixed (a JSON path, a literal), by name.
    constants: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect = SQLITE) -> Prepared:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[name] for name in names]
        processors = tuple(
            bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds
        )
        constants = {
            name: bind.value for name, bind in zip(names, binds, strict=True) if not bind.required
        }
        return cls(compiled.string, names, processors, constants)

    def bind(self, values: Mapping[str, Any], expect: int | None = 1) -> Write:
        if self.constants:
            values = {**self.constants, **values}
        params = tuple(
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.processors, strict=True)
        )
        return Write(self.sql, params, expect)


def _bound(table: Table, prefix: str, name: str) -> Any:
    return bindparam(f"{prefix}_{name}", type_=table.c[name].type)


def _matching(table: Table, match: Sequence[str]) -> list[Any]:
    """``column = seen_<column>`` for each (``IS`` where the column may be NULL): the values
    the turn read, so a row that moved on since matches nothing."""
    return [
        table.c[name].is_not_distinct_from(_bound(table, "seen", name))
        if table.c[name].nullable
        else table.c[name] == _bound(table, "seen", name)
        for name in match
    ]


def prepared_update(table: Table, *, match: Sequence[str], assign: Sequence[str]) -> Prepared:
    """``UPDATE table SET <assign> WHERE <match>``, bound as ``seen_<column>`` and
    ``new_<column>``."""
    statement = (
        update(table)
        .where(*_matching(table, match))
        .values({name: _bound(table, "new", name) for name in assign})
    )
    return Prepared.of(statement)


def prepared_delete(table: Table, *, match: Sequence[str]) -> Prepared:
    """``DELETE FROM table WHERE <match>``, bound as ``seen_<column>``."""
    return Prepared.of(delete(table).where(*_matching(table, match)))


def prepared_insert(table: Table, columns: Sequence[str], *, if_absent: bool = False) -> Prepared:
    """``INSERT INTO table (<columns>)``, bound as ``new_<column>``; `if_absent`: a row
    already there (another turn's) makes it insert nothing (``ON CONFLICT DO NOTHING``)."""
    values = {name: _bound(table, "new", name) for name in columns}
    if if_absent:
        return Prepared.of(sqlite_insert(table).values(values).on_conflict_do_nothing())
    return Prepared.of(insert(table).values(values))


def prepared_increment(table: Table, *, keys: Sequence[str], counters: Sequence[str]) -> Prepared:
    """``INSERT`` a row of counts, or add them to the row with the same keys: increments
    commute, so turns that count into the same row need not have read it."""
    columns = [*keys, *counters]
    statement = sqlite_insert(table).values({name: _bound(table, "new", name) for name in columns})
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + statement.excluded[name] for name in counters},
    )
    return Prepared.of(statement)


def prepared_guard(table: Table, *, match: Sequence[str]) -> Prepared:
    """``SELECT 1 FROM table WHERE <match>``: a write that changes nothing, there so that a
    turn whose decision rested on that row goes in only if the row is still as read."""
    found = select(literal_column("1")).select_from(table)
    return Prepared.of(found.where(*_matching(table, match)))


@dataclass(frozen=True)
class Write:
    """One statement of a turn, and the row count it must have (None: any)."""

    sql: str
    params: tuple[Any, ...]
    expect: int | None = 1


Outcome = int | BaseException | None  # APPLIED, the index of the write that did not match, or why


def _apply(connection: sqlite3.Connection, turns: Sequence[Sequence[Write]]) -> list[Outcome]:
    """On aiosqlite's thread: every turn in one transaction, each whole or not at all."""
    outcomes: list[Outcome] = []
    connection.execute("BEGIN IMMEDIATE")
    try:
        for writes in turns:
            connection.execute("SAVEPOINT turn")
            outcome: Outcome = APPLIED
            for index, write in enumerate(writes):
                try:
                    cursor = connection.execute(write.sql, write.params)
                    # A guard (a SELECT) counts the rows it finds; a change, those it changed.
                    count = len(cursor.fetchall()) if cursor.description else cursor.rowcount
                except sqlite3.Error as error:
                    outcome = sa_exc.DBAPIError.instance(
                        write.sql, write.params, error, sqlite3.Error
                    )
                    break
                if write.expect is not None and count != write.expect:
                    outcome = index
                    break
            if outcome is not APPLIED:
                connection.execute("ROLLBACK TO turn")
            connection.execute("RELEASE turn")
            outcomes.append(outcome)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


class WriteBatch(Batcher[Sequence[Write]]):
    """Turns' writes group-committed on the database's write connection (SQLite only)."""

    max_items = MAX_TURNS

    def __init__(self, db: Any) -> None:
        super().__init__(db.engine, _apply)

    async def apply(self, writes: Sequence[Write]) -> Outcome:
        """Store `writes` as one unit with other turns' and return once committed (or not)."""
        return await self._submit(writes)

    def _failed(self, error: Exception) -> BaseException:
        return _as_sqlalchemy(error)


def _as_sqlalchemy(error: Exception) -> Exception:
    """A driver error as SQLAlchemy's, as the ORM path raises it (the webhook tells a
    transient "database is locked" from a bug by SQLAlchemy's classes)."""
    if isinstance(error, sqlite3.Error):
        return sa_exc.DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error)
    return error
