"""Group commit: the writes of many chats' turns in one transaction.

SQLite has one write connection (bot.db), and a turn that reads, decides and writes through
the ORM holds it for all of that: on the deadline day every member's typed answer queues
behind every other. PostgreSQL has no such queue, but a turn through the ORM there costs a
pooled checkout, a transaction and a round trip per statement, with the ORM's work around
each, on the one event loop (bench/README). A turn on this path reads on a reader
(bot.read_batch), decides, and hands over only its writes: a few prepared statements, each
with the row count it must have. Whatever is handed over while one batch runs goes in the
next, so the batches grow with the load.

A batch is one transaction: on SQLite one function on aiosqlite's thread (BEGIN IMMEDIATE),
on PostgreSQL one connection's statements. For each turn a SAVEPOINT, its statements, and
RELEASE, or ROLLBACK TO when a statement changed another number of rows than expected (the
row moved on since the turn read it, or its done mark is already there) or failed; then
one COMMIT. A turn's writes therefore go in whole or not at all, the others' go in
regardless, and each turn is told which: applied, or the index of the statement that did
not match (the turn then redoes its work on the ORM path, which decides afresh), or the
error. Nothing is stored before the COMMIT returns, and a turn replies only after it.

On PostgreSQL each of those statements is a round trip, and their socket writes were the
largest cost of a wizard step there. So a batch first goes in pipelined, without
savepoints: every turn's first statement in one round trip (asyncpg's `fetchmany`), then
every second one, each made to answer a row per row it touched, tagged with its turn's
number (`Prepared.tagged`). Only where a turn that has written must be undone alone does
the batch roll back and run again as above (`_pipelined`).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Table, bindparam, delete, insert, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from bot.batching import POSTGRESQL, SQLITE, Batcher, driver_error

# Turns per transaction at most: a batch holds the write lock (and the CLI's writers wait
# on it) for its whole length; at about 0.1 ms a turn this is a few tens of milliseconds.
MAX_TURNS = 256
APPLIED = None
TURN_TAG = "turn_tag"  # the parameter a pipelined statement carries its turn's number in
# Each dialect's INSERT, for statements with an ON CONFLICT clause (SQLite's first).
_INSERTS = (sqlite_insert, postgresql_insert)


@dataclass(frozen=True)
class Compiled:
    """A statement compiled for one dialect: its SQL, and how to bind values to it (each
    through its column type's own bind processing: JSON, UTC datetimes, enums)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    # Parameters the statement itself fixed (a JSON path, a literal), by name.
    constants: Mapping[str, Any]
    returns_rows: bool  # a SELECT (a guard): what counts is the rows it finds

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[name] for name in names]
        processors = tuple(
            bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds
        )
        constants = {
            name: bind.value for name, bind in zip(names, binds, strict=True) if not bind.required
        }
        return cls(compiled.string, names, processors, constants,
                   bool(getattr(statement, "is_select", False)))

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        if self.constants:
            values = {**self.constants, **values}
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.processors, strict=True)
        )


class Prepared:
    """A Core statement, compiled once for each dialect it runs on (SQLite's, or
    PostgreSQL's through asyncpg), when first bound there."""

    def __init__(
        self, statement: ClauseElement, postgresql: ClauseElement | None = None, *,
        commutes: bool = False,
    ) -> None:
        # An INSERT … ON CONFLICT is each dialect's own construct; others are shared.
        shared = statement if postgresql is None else postgresql
        self._statements = {SQLITE.name: statement, POSTGRESQL.name: shared}
        self._compiled: dict[str, Compiled] = {}
        # An increment: its order among other turns' does not matter, so the batch runs
        # it after every turn, sorted (see `_deferred`).
        self.commutes = commutes

    @classmethod
    def of(
        cls, statement: ClauseElement, postgresql: ClauseElement | None = None, *,
        commutes: bool = False,
    ) -> Prepared:
        return cls(statement, postgresql, commutes=commutes)

    def on(self, dialect: Dialect) -> Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = Compiled.of(self._statements[dialect.name], dialect)
            self._compiled[dialect.name] = compiled
        return compiled

    def tagged(self, dialect: Dialect) -> Compiled:
        """This statement made to answer a row for each row it finds or changes, carrying
        the number bound as ``turn_tag``: ``SELECT $tag FROM …`` for a guard, ``… RETURNING
        $tag`` for a change. Many turns' runs of it can then go in one pipelined round trip
        (`_pipelined`), and each turn's count is the rows carrying its number."""
        key = f"{dialect.name}+tag"
        compiled = self._compiled.get(key)
        if compiled is None:
            statement: Any = self._statements[dialect.name]
            tag = bindparam(TURN_TAG, type_=Integer)
            if getattr(statement, "is_select", False):
                tagged = statement.with_only_columns(tag)
            else:
                tagged = statement.returning(tag)
            compiled = Compiled.of(tagged, dialect)
            self._compiled[key] = compiled
        return compiled

    def bind(self, values: Mapping[str, Any], expect: int | None = 1) -> Write:
        """This statement with `values` (bound on the batch's side, for its dialect)."""
        return Write(self, values, expect)


def _bound(table: Table, prefix: str, name: str) -> Any:
    return bindparam(f"{prefix}_{name}", type_=table.c[name].type)


def _matching(table: Table, match: Sequence[str], prefix: str = "seen") -> list[Any]:
    """``column = seen_<column>`` for each (``IS`` where the column may be NULL): the values
    the turn read, so a row that moved on since matches nothing."""
    return [
        table.c[name].is_not_distinct_from(_bound(table, prefix, name))
        if table.c[name].nullable
        else table.c[name] == _bound(table, prefix, name)
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
        return Prepared.of(*(insert(table).values(values).on_conflict_do_nothing()
                             for insert in _INSERTS))
    return Prepared.of(insert(table).values(values))


def prepared_increment(table: Table, *, keys: Sequence[str], counters: Sequence[str]) -> Prepared:
    """``INSERT`` a row of counts, or add them to the row with the same keys: increments
    commute, so turns that count into the same row need not have read it."""
    columns = [*keys, *counters]

    def upsert(insert: Callable[[Table], Any]) -> Any:
        statement = insert(table).values({name: _bound(table, "new", name) for name in columns})
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.c[name] + statement.excluded[name] for name in counters},
        )

    return Prepared.of(*(upsert(insert) for insert in _INSERTS), commutes=True)


def prepared_guard(table: Table, *, match: Sequence[str]) -> Prepared:
    """``SELECT 1 FROM table WHERE <match>``: a write that changes nothing, there so that a
    turn whose decision rested on that row goes in only if the row is still as read. On
    PostgreSQL it also locks the row against change until the batch commits (``FOR
    SHARE``); on SQLite the batch holds the one write lock anyway."""
    found = select(literal_column("1")).select_from(table).where(*_matching(table, match))
    return Prepared.of(found.with_for_update(read=True))


def prepared_joined_guard(
    joined: Any, matches: Mapping[str, tuple[Table, Sequence[str]]]
) -> Prepared:
    """`prepared_guard` of several rows in one statement (one round trip on PostgreSQL):
    ``SELECT 1 FROM <joined> WHERE …``, each table's columns bound as
    ``<prefix>_<column>`` under its prefix in `matches`."""
    conditions = [
        condition
        for prefix, (table, match) in matches.items()
        for condition in _matching(table, match, prefix)
    ]
    found = select(literal_column("1")).select_from(joined).where(*conditions)
    return Prepared.of(found.with_for_update(read=True))


@dataclass(frozen=True, slots=True)
class Write:
    """One statement of a turn, its values, and the row count it must have (None: any)."""

    statement: Prepared
    values: Mapping[str, Any]
    expect: int | None = 1

    def on(self, dialect: Dialect) -> tuple[str, tuple[Any, ...], bool]:
        """Its SQL, bound parameters and whether it returns rows, for `dialect`."""
        compiled = self.statement.on(dialect)
        return compiled.sql, compiled.params(self.values), compiled.returns_rows


Outcome = int | BaseException | None  # APPLIED, the index of the write that did not match, or why
Gone = Sequence[Callable[[], bool]]  # per turn: whether its caller was cancelled meanwhile
Bound = tuple[str, tuple[Any, ...]]


def _deferred(increments: list[Bound]) -> list[Bound]:
    """The applied turns' increments, to run after every turn and before the COMMIT, in
    one order (table, then keys) that every batch of every process follows.

    The count rows are shared by a unit's members: two batches on PostgreSQL (three run at
    once, and other processes have theirs) that each locked one unit's row and then
    wanted the other's deadlocked, and the server broke it only after a second. Taken in
    one order, and only when a batch holds no other lock it waits on, they cannot."""
    return sorted(increments)


# What a turn whose caller was cancelled while its batch ran is given (no one reads it):
# its writes were rolled back to its savepoint.
WITHDRAWN = -1


@dataclass(frozen=True, slots=True)
class _Step:
    """A statement the batch's plan asks its driver to run; `checked`: a turn's own, whose
    row count (or failure) goes back to the plan, where any other failure ends the batch."""

    sql: str
    params: tuple[Any, ...] = ()
    returns_rows: bool = False
    checked: bool = False


@dataclass(frozen=True, slots=True)
class _Failed:
    """A checked statement's failure; `lost`: another transaction got there first."""

    error: BaseException
    lost: bool = False


_SAVEPOINT, _RELEASE, _ROLLBACK = (_Step("SAVEPOINT turn"), _Step("RELEASE turn"),
                                   _Step("ROLLBACK TO turn"))
Plan = Generator[_Step, "int | _Failed | None", list[Outcome]]


def _plan(turns: Sequence[Sequence[Write]], gone: Gone, dialect: Dialect) -> Plan:
    """Every turn in the batch's transaction, each in a savepoint, whole or not at all,
    then the applied turns' increments; the same for both drivers (`_apply`,
    `_apply_postgresql`), which run each step and send back its row count."""
    outcomes: list[Outcome] = []
    increments: list[Bound] = []
    for number, writes in enumerate(turns):
        yield _SAVEPOINT
        outcome: Outcome = APPLIED
        own: list[Bound] = []
        for index, write in enumerate(writes):
            sql, params, returns_rows = write.on(dialect)
            if write.statement.commutes:
                own.append((sql, params))
                continue
            # A guard (a SELECT) counts the rows it finds; a change, those it changed.
            count = yield _Step(sql, params, returns_rows, checked=True)
            if isinstance(count, _Failed):
                # The done mark (the first write) finding its row means a duplicate: a
                # lost race there is an error, to be retried, never a silent drop.
                lost = count.lost and index > 0
                outcome = index if lost else driver_error(dialect, count.error, sql, params)
                break
            if write.expect is not None and count != write.expect:
                outcome = index
                break
        if outcome is APPLIED and gone[number]():
            outcome = WITHDRAWN
        if outcome is APPLIED:
            increments.extend(own)
        else:
            yield _ROLLBACK
        yield _RELEASE
        outcomes.append(outcome)
    for sql, params in _deferred(increments):
        yield _Step(sql, params)
    return outcomes


def _apply(
    connection: sqlite3.Connection, turns: Sequence[Sequence[Write]], gone: Gone
) -> list[Outcome]:
    """On aiosqlite's thread: the batch's plan in one transaction."""
    plan = _plan(turns, gone, SQLITE)
    connection.execute("BEGIN IMMEDIATE")
    try:
        done: int | _Failed | None = None
        while True:
            try:
                step = plan.send(done)
            except StopIteration as finished:
                outcomes: list[Outcome] = finished.value
                break
            try:
                cursor = connection.execute(step.sql, step.params)
                done = len(cursor.fetchall()) if step.returns_rows else cursor.rowcount
            except sqlite3.Error as error:
                if not step.checked:
                    raise
                done = _Failed(error)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


# PostgreSQL's errors that mean another transaction got there first (a deadlock between two
# batches, of this process or another; a lock that could not be had): the turn lost a race,
# as on a changed row, and redoes its work on the ORM path.
_LOST_RACE = ("40001", "40P01", "55P03")


async def _apply_postgresql(
    connection: Any, turns: Sequence[Sequence[Write]], gone: Gone, sent: Counter[str]
) -> list[Outcome]:
    """On one of PostgreSQL's connections (asyncpg's, as SQLAlchemy set it up): the batch
    pipelined (`_pipelined`), or where a turn there must be undone, its plan in one
    transaction, each turn in its savepoint. `sent` counts the round trips."""
    outcomes = await _pipelined(connection, turns, gone, sent)
    if outcomes is not None:
        return outcomes
    sent["redone"] += 1
    return await _planned(connection, turns, gone, sent)


async def fetch_tagged(
    connection: Any, compiled: Compiled, values: Mapping[int, Mapping[str, Any]],
    sent: Counter[str],
) -> dict[int, list[tuple[Any, ...]]]:
    """A tagged statement (its last column the number bound as ``turn_tag``) run for each
    turn's `values` in one pipelined round trip (asyncpg's `fetchmany`): each turn's rows,
    the tag taken off."""
    rows = await connection.fetchmany(compiled.sql, [
        compiled.params({**bound, TURN_TAG: number}) for number, bound in values.items()
    ])
    sent["round_trips"] += 1
    theirs: dict[int, list[tuple[Any, ...]]] = {number: [] for number in values}
    for row in rows:
        theirs[row[-1]].append(row[:-1])
    return theirs


class _Undo(Exception):
    """A pipelined batch must be undone: a turn that wrote must be rolled back alone."""


async def _pipelined(
    connection: Any, turns: Sequence[Sequence[Write]], gone: Gone, sent: Counter[str]
) -> list[Outcome] | None:
    """The batch without savepoints, a statement position at a time: the turns' first
    statements (their done marks) in one pipelined round trip (asyncpg's `fetchmany`), then
    their second ones (their guards)…, those of one SQL together, then the increments.

    Run so, a turn's statement may come before an earlier turn's later one. That changes
    nothing: the rows the guards check (identities, members) are rows no turn here writes;
    a turn changes only its own chat's, pledge's and update's rows, matched on the values
    it read (or unique), so one another turn of the batch changed first matches nothing;
    and increments are deferred anyway. A turn whose statement finds or changes another
    number of rows than expected before it wrote anything (its update already done, its
    guard's row moved on) is simply left out of the positions after. One that had written,
    a statement that failed, or a turn withdrawn meanwhile needs that turn undone alone:
    the transaction is rolled back and None returned, and the batch runs again turn by
    turn (`_planned`)."""
    import asyncpg  # here: a SQLite process never loads it

    outcomes: list[Outcome] = [APPLIED] * len(turns)
    wrote = [False] * len(turns)
    transaction = connection.transaction()
    await transaction.start()
    sent["round_trips"] += 1
    try:
        for position in range(max(map(len, turns), default=0)):
            together: dict[Prepared, list[int]] = {}
            for number, writes in enumerate(turns):
                if outcomes[number] is APPLIED and position < len(writes):
                    statement = writes[position].statement
                    if not statement.commutes:
                        together.setdefault(statement, []).append(number)
            for statement, numbers in together.items():
                found = await fetch_tagged(connection, statement.tagged(POSTGRESQL), {
                    number: turns[number][position].values for number in numbers
                }, sent)
                changes = not statement.on(POSTGRESQL).returns_rows
                for number in numbers:
                    expect, count = turns[number][position].expect, len(found[number])
                    wrote[number] = wrote[number] or bool(changes and count)
                    if expect is not None and count != expect:
                        if wrote[number]:  # this statement's rows included
                            raise _Undo
                        outcomes[number] = position
        if any(outcome is APPLIED and left() for outcome, left in zip(outcomes, gone,
                                                                          strict=True)):
            raise _Undo
        increments = _deferred([
            write.on(POSTGRESQL)[:2]
            for number, writes in enumerate(turns) if outcomes[number] is APPLIED
            for write in writes if write.statement.commutes
        ])
        for sql, group in itertools.groupby(increments, key=lambda bound: bound[0]):
            await connection.executemany(sql, [params for _, params in group])
            sent["round_trips"] += 1
    except (_Undo, asyncpg.PostgresError):
        await transaction.rollback()
        sent["round_trips"] += 1
        return None
    except BaseException:
        with contextlib.suppress(Exception):  # the connection may be what failed
            await transaction.rollback()
        raise
    sent["round_trips"] += 1
    try:
        await transaction.commit()
    except asyncpg.PostgresError:  # refused, so the server rolled it back: turn by turn
        return None
    return outcomes


async def _planned(
    connection: Any, turns: Sequence[Sequence[Write]], gone: Gone, sent: Counter[str]
) -> list[Outcome]:
    """The batch's plan in one transaction, each turn in its savepoint."""
    import asyncpg

    plan = _plan(turns, gone, POSTGRESQL)
    async with connection.transaction():
        sent["round_trips"] += 2  # BEGIN and COMMIT
        done: int | _Failed | None = None
        while True:
            try:
                step = plan.send(done)
            except StopIteration as finished:
                return finished.value
            sent["round_trips"] += 1
            try:
                if step.returns_rows:
                    done = len(await connection.fetch(step.sql, *step.params))
                else:  # asyncpg's status: "UPDATE 1", "INSERT 0 1", "DELETE 0", "SAVEPOINT"
                    status = await connection.execute(step.sql, *step.params)
                    done = int(status.rpartition(" ")[2]) if step.checked else None
            except asyncpg.PostgresError as error:
                if not step.checked:
                    raise
                done = _Failed(error, lost=error.sqlstate in _LOST_RACE)


class WriteBatch(Batcher[Sequence[Write]]):
    """Turns' writes group-committed on one of the write engine's connections."""

    max_items = MAX_TURNS
    around_item = 2  # SAVEPOINT, and RELEASE or ROLLBACK TO

    def __init__(self, db: Any) -> None:
        # On PostgreSQL `sent` also counts the batches undone and run again turn by turn.
        super().__init__(db.engine, _apply if db.sqlite else _apply_postgresql)
        self.lost_races = 0  # turns whose row moved on, redone on the ORM path

    async def apply(self, writes: Sequence[Write]) -> Outcome:
        """Store `writes` as one unit with other turns' and return once committed (or not)."""
        outcome = await self._submit(writes)
        if isinstance(outcome, int) and outcome > 0:
            self.lost_races += 1  # bench/throughput.py prints how many were redone
        return outcome

    def _failed(self, error: Exception) -> BaseException:
        return driver_error(self._engine.dialect, error, "BEGIN", None)
