"""Grouped reads: many chats' reads in one hand-off to a reader, plain rows back.

A wizard step on the group path (bot.write_batch) reads a row or two and decides. Read
through an AsyncSession, those rows cost the step more than everything else it does: a
session made and closed, a pooled connection checked out, BEGIN, the ORM compiling,
executing and building instances, COMMIT, and on SQLite each statement a hand-off to
aiosqlite's thread (bench/README). Here a turn hands over prepared statements (compiled
once, as the group commit's writes are) and gets tuples of plain values, converted by the
columns' own result processing (JSON, datetimes, enums).

Whatever is handed over while one batch reads goes in the next, and a batch is one read
transaction on one reader connection (on SQLite a function on its thread, on PostgreSQL a
REPEATABLE READ, READ ONLY transaction): each turn's reads see one snapshot, taken after
the turn asked. Nothing read here is trusted for long: a turn that acts on it writes behind
guards that it is unchanged (bot.write_batch).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, bindparam
from sqlalchemy.engine import Dialect

from bot.batching import POSTGRESQL, SQLITE, Batcher, driver_error
from bot.write_batch import TURN_TAG, Compiled, Prepared, fetch_tagged

Row = tuple[Any, ...]
ResultProcessor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Read:
    """One SELECT and its values, bound on the batch's side for its dialect."""

    query: PreparedRead
    values: Mapping[str, Any]


class PreparedRead:
    """A Core SELECT compiled once for each dialect, with its columns' result processing."""

    def __init__(self, statement: Select) -> None:
        self._query = Prepared.of(statement)
        self._columns = tuple(statement.selected_columns)
        self._processors: dict[str, tuple[ResultProcessor, ...]] = {}
        # The same SELECT with the number bound as `turn_tag` as its last column, so that
        # many turns' runs of it can go in one pipelined round trip (`_pipelined`); a
        # textual one has none, and runs a turn at a time.
        self._tagged = (
            Prepared.of(statement.add_columns(bindparam(TURN_TAG, type_=Integer)))
            if isinstance(statement, Select) else None
        )

    @classmethod
    def of(cls, statement: Select) -> PreparedRead:
        return cls(statement)

    def processors(self, dialect: Dialect) -> tuple[ResultProcessor, ...]:
        processors = self._processors.get(dialect.name)
        if processors is None:
            processors = self._processors[dialect.name] = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self._columns
            )
        return processors

    def on(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        compiled = self._query.on(dialect)
        return compiled.sql, compiled.params(values)

    def tagged(self, dialect: Dialect) -> Compiled | None:
        """Its SQL with the turn's number as a last column (bound as ``turn_tag``)."""
        return None if self._tagged is None else self._tagged.on(dialect)

    def bind(self, values: Mapping[str, Any]) -> Read:
        return Read(self, values)


def _processed(rows: Sequence[Sequence[Any]], processors: tuple[ResultProcessor, ...]) -> list[Row]:
    if not any(processors):
        return [tuple(row) for row in rows]
    return [
        tuple(value if process is None else process(value)
              for value, process in zip(row, processors, strict=True))
        for row in rows
    ]


Outcome = list[list[Row]] | BaseException  # each read's rows, or why the turn's failed


def _read(
    connection: sqlite3.Connection, turns: Sequence[Sequence[Read]], _gone: object
) -> list[Outcome]:
    """On aiosqlite's thread: every turn's reads, in one read transaction."""
    outcomes: list[Outcome] = []
    connection.execute("BEGIN")
    try:
        for reads in turns:
            found: list[list[Row]] = []
            for read in reads:
                sql, params = read.query.on(SQLITE, read.values)
                try:
                    rows = connection.execute(sql, params).fetchall()
                except sqlite3.Error as error:  # this turn's: the others read on
                    outcomes.append(driver_error(SQLITE, error, sql, params))
                    break
                found.append(_processed(rows, read.query.processors(SQLITE)))
            else:
                outcomes.append(found)
    finally:
        connection.execute("COMMIT")  # nothing was written: this only ends the snapshot
    return outcomes


def _needs_snapshot(turns: Sequence[Sequence[Read]]) -> bool:
    """Whether a turn reads more than once. A statement is a snapshot of its own: turns of
    one read each need no transaction (its BEGIN and ROLLBACK, two more round trips)."""
    return any(len(reads) > 1 for reads in turns)


def _snapshot(connection: Any) -> Any:
    return connection.transaction(isolation="repeatable_read", readonly=True)


async def _read_postgresql(
    connection: Any, turns: Sequence[Sequence[Read]], _gone: object, sent: Counter[str]
) -> list[Outcome]:
    """On an asyncpg connection: every turn's reads in one read-only snapshot, pipelined
    (`_pipelined`), or where a statement failed there, turn by turn (`_turn_by_turn`)."""
    import asyncpg  # here: a SQLite process never loads it

    transaction = _snapshot(connection) if _needs_snapshot(turns) else None
    if transaction is not None:
        await transaction.start()
        sent["round_trips"] += 1
    try:
        return await _pipelined(connection, turns, sent)
    except asyncpg.PostgresError:
        pass
    finally:
        if transaction is not None:
            await transaction.rollback()  # nothing was written: this only ends the snapshot
            sent["round_trips"] += 1
    return await _turn_by_turn(connection, turns, sent)


async def _pipelined(
    connection: Any, turns: Sequence[Sequence[Read]], sent: Counter[str]
) -> list[Outcome]:
    """Every turn's first read in one pipelined round trip (asyncpg's `fetchmany`; those of
    one SELECT together), then every second one…; each row says whose it is by its last
    column, the turn's number."""
    found: list[list[list[Row]]] = [[] for _ in turns]
    for position in range(max(map(len, turns), default=0)):
        together: dict[PreparedRead, list[int]] = {}
        for number, reads in enumerate(turns):
            if position < len(reads):
                together.setdefault(reads[position].query, []).append(number)
        for query, numbers in together.items():
            compiled = query.tagged(POSTGRESQL)
            values = {number: turns[number][position].values for number in numbers}
            if compiled is not None:
                theirs = await fetch_tagged(connection, compiled, values, sent)
            else:
                theirs = {}
                for number, bound in values.items():
                    sql, params = query.on(POSTGRESQL, bound)
                    theirs[number] = await connection.fetch(sql, *params)
                    sent["round_trips"] += 1
            processors = query.processors(POSTGRESQL)
            for number in numbers:
                found[number].append(_processed(theirs[number], processors))
    return list(found)


async def _turn_by_turn(
    connection: Any, turns: Sequence[Sequence[Read]], sent: Counter[str]
) -> list[Outcome]:
    """Each turn's reads on their own, in one read-only snapshot (a failed statement ends
    it, and the turns after it read in a new one): a failure is that turn's alone."""
    import asyncpg

    def snapshot() -> Any:
        sent["round_trips"] += 1
        return _snapshot(connection)

    outcomes: list[Outcome] = []
    transaction = snapshot() if _needs_snapshot(turns) else None
    if transaction is not None:
        await transaction.start()
    try:
        for reads in turns:
            found: list[list[Row]] = []
            for read in reads:
                sql, params = read.query.on(POSTGRESQL, read.values)
                sent["round_trips"] += 1
                try:
                    rows = await connection.fetch(sql, *params)
                except asyncpg.PostgresError as error:  # this turn's: the others read on
                    outcomes.append(driver_error(POSTGRESQL, error, sql, params))
                    if transaction is not None:
                        await transaction.rollback()
                        transaction = snapshot()
                        await transaction.start()
                    break
                found.append(_processed(rows, read.query.processors(POSTGRESQL)))
            else:
                outcomes.append(found)
    finally:
        if transaction is not None:
            await transaction.rollback()  # nothing was written: this only ends the snapshot
            sent["round_trips"] += 1
    return outcomes


class ReadBatch(Batcher[Sequence[Read]]):
    """Turns' reads on one of the read engine's connections, a batch at a time."""

    def __init__(self, db: Any) -> None:
        super().__init__(db.read_engine, _read if db.sqlite else _read_postgresql)

    async def fetch(self, *reads: Read) -> list[list[Row]]:
        """The rows of each of `reads`, read together in one snapshot."""
        return await self._submit(reads)

    def _failed(self, error: Exception) -> BaseException:
        return driver_error(self._engine.dialect, error, "BEGIN", None)
