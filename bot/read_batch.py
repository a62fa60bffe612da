"""Grouped reads on SQLite: many chats' reads in one hand-off to a reader, plain rows back.

A wizard step on SQLite's group path (bot.write_batch) reads a row or two and decides. Read
through an AsyncSession, those rows cost the step more than everything else it does: a
session made and closed, a pooled connection checked out, BEGIN, the ORM compiling,
executing and building instances, COMMIT, each statement a hand-off to aiosqlite's thread
(bench/README). Here a turn hands over prepared statements (compiled once, as the group
commit's writes are) and gets tuples of plain values, converted by the columns' own result
processing (JSON, datetimes, enums).

Whatever is handed over while one batch reads goes in the next, and a batch is one function
on a reader connection's thread, in one read transaction: each turn's reads see one
snapshot, taken after the turn asked. Nothing read here is trusted for long: a turn that
acts on it writes behind guards that it is unchanged (bot.write_batch).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy import exc as sa_exc

from bot.batching import Batcher
from bot.write_batch import SQLITE, Prepared

Row = tuple[Any, ...]
ResultProcessor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Read:
    """One bound SELECT, and how to convert each column of its rows."""

    sql: str
    params: tuple[Any, ...]
    processors: tuple[ResultProcessor, ...]


@dataclass(frozen=True)
class PreparedRead:
    """A Core SELECT compiled once for SQLite, with its columns' result processing."""

    query: Prepared
    processors: tuple[ResultProcessor, ...]

    @classmethod
    def of(cls, statement: Select) -> PreparedRead:
        processors = tuple(
            column.type.dialect_impl(SQLITE).result_processor(SQLITE, None)
            for column in statement.selected_columns
        )
        return cls(Prepared.of(statement), processors)

    def bind(self, values: Mapping[str, Any]) -> Read:
        bound = self.query.bind(values, expect=None)
        return Read(bound.sql, bound.params, self.processors)


def _rows(connection: sqlite3.Connection, read: Read) -> list[Row]:
    rows = connection.execute(read.sql, read.params).fetchall()
    processors = read.processors
    if not any(processors):
        return rows
    return [
        tuple(value if process is None else process(value)
              for value, process in zip(row, processors, strict=True))
        for row in rows
    ]


Outcome = list[list[Row]] | BaseException  # each read's rows, or why the turn's failed


def _read(connection: sqlite3.Connection, turns: Sequence[Sequence[Read]]) -> list[Outcome]:
    """On aiosqlite's thread: every turn's reads, in one read transaction."""
    outcomes: list[Outcome] = []
    connection.execute("BEGIN")
    try:
        for reads in turns:
            found: list[list[Row]] = []
            for read in reads:
                try:
                    found.append(_rows(connection, read))
                except sqlite3.Error as error:  # this turn's: the others read on
                    outcomes.append(_as_sqlalchemy(error, read))
                    break
            else:
                outcomes.append(found)
    finally:
        connection.execute("COMMIT")  # nothing was written: this only ends the snapshot
    return outcomes


class ReadBatch(Batcher[Sequence[Read]]):
    """Turns' reads on one of the read engine's connections, a batch at a time (SQLite only)."""

    def __init__(self, db: Any) -> None:
        super().__init__(db.read_engine, _read)

    async def fetch(self, *reads: Read) -> list[list[Row]]:
        """The rows of each of `reads`, read together in one snapshot."""
        return await self._submit(reads)

    def _failed(self, error: Exception) -> BaseException:
        if isinstance(error, sqlite3.Error):
            return sa_exc.DBAPIError.instance("BEGIN", None, error, sqlite3.Error)
        return error


def _as_sqlalchemy(error: sqlite3.Error, read: Read) -> BaseException:
    """A driver error as SQLAlchemy's, as the ORM path raises it."""
    return sa_exc.DBAPIError.instance(read.sql, read.params, error, sqlite3.Error)
