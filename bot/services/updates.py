"""Telegram's retries have one effect: an update is marked done together with its effects.

Telegram (or a load balancer in front of several processes) may deliver an update again:
after a timeout, after a non-200 answer, after the process handling it died. Each update
id is recorded in `ProcessedUpdate`, and the rule is "effects committed ⇔ update done":

* Before handling, `seen()` only *reads* whether the id is done (no write transaction).
* Inside `handling()`, the first commit of a write-session that changed anything also
  inserts the update's `ProcessedUpdate` row, in the same transaction (a `before_commit`
  hook on the write sessions). A process killed before that commit leaves nothing behind,
  so the redelivered update is handled in full; one killed after it has done the work, so
  the redelivery is dropped. A concurrent duplicate (another process, same id) fails on the
  primary key at its own commit: its transaction rolls back whole and `UpdateAlreadyHandled`
  is raised, which the error handler treats as handled (no reply, no apology).
* An update whose handling wrote nothing gets its mark after the handler finished, through
  `DoneMarks`, which group-commits them: losing one in a crash only risks answering a
  read-only request twice.
* Every handling that ends with its replies sent also records that it answered
  (`answered_at`, through the same group commit). A process killed between its commit and
  its reply leaves a mark without it. Its redelivery is not handled again, but answered
  (`handlers.resume`): the person learns their message was kept and sees where they are,
  instead of hearing nothing and typing it again into the next step.

The marks only have to outlive Telegram's retries (about 24 hours): `prune` deletes older
ones, a batch at a time.

Nothing here knows about Telegram objects; the update processor and the guard call it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

import sqlmodel
from sqlalchemy import bindparam, delete, event, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ORMExecuteState, Session
from sqlmodel import col

from bot.db import Database, WriteSession
from bot.models import ProcessedUpdate
from bot.write_batch import Prepared, Write

logger = logging.getLogger(__name__)

# Answered marks wait this long for company before one transaction writes them all (on
# SQLite each such transaction queues with the handlers' writes for the one write lock).
GROUP_COMMIT_DELAY_S = 0.2
# Written marks remembered in memory (about 1.5 MB): a redelivery comes within seconds to
# minutes; an older one to a read-only turn is at worst answered twice.
RECENT_MARKS = 10_000
# Marks deleted per transaction by `prune`: each holds the write lock (on SQLite, the one
# lock every handler queues for) only briefly, however many marks have piled up.
PRUNE_BATCH = 10_000


class Done(Enum):
    """What the database knows of an update id."""

    no = "no"
    answered = "answered"  # handled and answered: a redelivery has nothing to do
    unanswered = "unanswered"  # its effects committed, its answer never confirmed

    @classmethod
    def of(cls, answered: object) -> Done:
        """From `answered_column`'s value: NULL without a mark, else whether it answered."""
        if answered is None:
            return cls.no
        return cls.answered if answered else cls.unanswered


class UpdateAlreadyHandled(Exception):
    """A delivery of this update committed its effects first; this one changed nothing.

    The error handler answers it if that delivery never does (handlers.resume)."""


@dataclass
class UpdateMark:
    """The update being handled in this task, and how its handling went."""

    channel: str
    update_id: int
    at: datetime
    marks: DoneMarks
    committed: bool = False  # the done row went in with a committed write
    failed: bool = False  # the handler raised: no read-only mark, a redelivery retries it
    duplicate: bool = False


@dataclass
class _Scope:
    """Opened by the update processor around one update; the guard fills `mark`."""

    mark: UpdateMark | None = None


_scope: ContextVar[_Scope | None] = ContextVar("update_scope", default=None)


def current() -> UpdateMark | None:
    scope = _scope.get()
    return scope.mark if scope is not None else None


@dataclass
class DoneMarks:
    """Marks of updates answered, group-committed in the background: a new row for one that
    wrote nothing, `answered_at` on the row of one whose writes committed it."""

    db: Database
    _pending: dict[tuple[str, int], datetime] = field(default_factory=dict)
    # The last marks written, so a redelivery to this process is dropped without a query
    # (read-only turns served from memory ask the database nothing).
    _recent: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)
    _flushing: dict[tuple[str, int], datetime] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, channel: str, update_id: int, at: datetime) -> None:
        self._pending[(channel, update_id)] = at
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    def holds(self, channel: str, update_id: int) -> bool:
        key = (channel, update_id)
        return key in self._pending or key in self._flushing or key in self._recent

    async def _flush_soon(self) -> None:
        # Under a steady load marks keep coming: each transaction waits for company again,
        # where writing whatever came during the last one would commit a handful at a time
        # (on PostgreSQL a checkout, BEGIN, INSERT and COMMIT for every few updates).
        while self._pending:
            await asyncio.sleep(GROUP_COMMIT_DELAY_S)
            async with self._lock:
                await self._write_pending()

    async def flush(self) -> None:
        """Write every pending mark now (also at shutdown)."""
        async with self._lock:
            while self._pending:
                await self._write_pending()

    async def _write_pending(self) -> None:
        """The marks pending now, in one transaction."""
        if not self._pending:
            return
        self._flushing, self._pending = self._pending, {}
        rows = [
            {"channel": channel, "update_id": update_id, "processed_at": at, "answered_at": at}
            for (channel, update_id), at in self._flushing.items()
        ]
        try:
            async with self.db.engine.begin() as conn:
                # One statement for any number of rows (an executemany): its compiled
                # form is cached, where a multi-row VALUES was compiled on every flush.
                await conn.execute(_insert_marks(self.db.sqlite), rows)
        except Exception:  # a lost read-only mark only risks answering a retry twice
            logger.warning("could not record %d handled updates", len(rows), exc_info=True)
        else:
            self._recent.update(dict.fromkeys(self._flushing))
            while len(self._recent) > RECENT_MARKS:
                self._recent.popitem(last=False)
        finally:
            self._flushing = {}

    async def close(self) -> None:
        """Wait for the group commit under way, then write what is left."""
        if self._task is not None and not self._task.done():
            await self._task
        await self.flush()


@functools.cache
def _insert_marks(sqlite: bool):
    insert = (sqlite_insert if sqlite else pg_insert)(ProcessedUpdate)
    # A row there already is the mark its writes committed: it now answered too.
    return insert.on_conflict_do_update(
        index_elements=["channel", "update_id"],
        set_={"answered_at": insert.excluded.answered_at},
    )


def answered_column(channel, update_id):
    """A scalar subquery over one update's mark: NULL without one, else whether it answered
    (`Done.of` reads it)."""
    return (
        select(col(ProcessedUpdate.answered_at).is_not(None))
        .where(ProcessedUpdate.channel == channel, ProcessedUpdate.update_id == update_id)
        .scalar_subquery()
    )


async def seen(db: Database, marks: DoneMarks, channel: str, update_id: int) -> Done:
    """What is known of this update id (a read, no write transaction)."""
    if marks.holds(channel, update_id):
        return Done.answered
    async with db.read_engine.connect() as conn:
        return Done.of(await conn.scalar(select(answered_column(channel, update_id))))


async def seen_in(session, channel: str, update_id: int) -> Done:
    """`seen`, in a session already open."""
    found = await session.exec(sqlmodel.select(answered_column(channel, update_id)))
    return Done.of(found.one())  # sqlmodel's select of one column: a scalar, not a row


async def prune(
    db: Database, now: datetime, retention: timedelta, *, batch: int = PRUNE_BATCH
) -> int:
    """Delete the marks of updates handled more than `retention` before `now`; how many.

    A mark without a time (none is written so) is kept: its age is unknown.
    """
    cutoff = now - retention
    oldest = (
        select(ProcessedUpdate.channel, ProcessedUpdate.update_id)
        .where(ProcessedUpdate.processed_at < cutoff)
        .limit(batch)
    )
    statement = delete(ProcessedUpdate).where(
        tuple_(ProcessedUpdate.channel, ProcessedUpdate.update_id).in_(oldest)
    )
    deleted = 0
    while True:
        async with db.engine.begin() as conn:
            count = (await conn.execute(statement)).rowcount
        deleted += count
        if count < batch:
            return deleted
        # Let a handler waiting for the write connection have it before the next batch.
        await asyncio.sleep(0)


def done_write(mark: UpdateMark) -> Write:
    """The done mark as one of a turn's grouped writes (bot.write_batch): it adds no row
    when the update is already done, and the turn's other writes are undone with it."""
    values = {"mark_channel": mark.channel, "mark_update": mark.update_id, "mark_at": mark.at}
    return _done_statement().bind(values)


@functools.cache
def _done_statement() -> Prepared:
    table = ProcessedUpdate.__table__
    values = {
        "channel": bindparam("mark_channel", type_=table.c.channel.type),
        "update_id": bindparam("mark_update", type_=table.c.update_id.type),
        "processed_at": bindparam("mark_at", type_=table.c.processed_at.type),
    }
    return Prepared.of(*(insert(table).values(values).on_conflict_do_nothing()
                         for insert in (sqlite_insert, pg_insert)))


def grouped(mark: UpdateMark | None, outcome: int | None) -> bool:
    """Note what a turn's grouped writes did to its update; whether they were stored.

    The done mark is the turn's first write: when it is the one that added nothing, the
    update is already done, and UpdateAlreadyHandled is raised (no effect, no reply).
    """
    if mark is None:
        return outcome is None
    if outcome is None:
        mark.committed = True
        return True
    if outcome == 0:
        mark.duplicate = True
        raise UpdateAlreadyHandled(mark.update_id)
    return False


@contextmanager
def scope() -> Iterator[_Scope]:
    """Around the handling of one update (the update processor opens it)."""
    holder = _Scope()
    token = _scope.set(holder)
    try:
        yield holder
    finally:  # a cancelled or crashed handling (an exception here) leaves the update undone
        _scope.reset(token)
    mark = holder.mark
    if mark is not None and not (mark.failed or mark.duplicate):
        mark.marks.add(mark.channel, mark.update_id, mark.at)


# A delivery that finds the update done may have raced one still at work (two processes
# given it at once, or a retry while the first was slow): that one answers within moments,
# and its answered mark follows 0.2 s later. Only past this wait is the first taken for dead.
FIRST_DELIVERY_GRACE_S = 5.0
_GRACE_POLL_S = 0.25


async def answered_within_grace(db: Database, marks: DoneMarks, mark: UpdateMark) -> bool:
    """Whether a delivery of `mark`'s update answers it within FIRST_DELIVERY_GRACE_S; False
    means the delivery that stored its effects died before it answered."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + FIRST_DELIVERY_GRACE_S
    while await seen(db, marks, mark.channel, mark.update_id) is not Done.answered:
        if loop.time() >= give_up_at:
            return False
        await asyncio.sleep(_GRACE_POLL_S)
    return True


def answered(mark: UpdateMark) -> None:
    """A duplicate's answer went out after all (`handlers.resume`): say so as for any."""
    mark.marks.add(mark.channel, mark.update_id, mark.at)


def handling(channel: str, update_id: int, at: datetime, marks: DoneMarks) -> UpdateMark:
    """Start handling `update_id` in the current scope: commits from now on carry its mark."""
    holder = _scope.get()
    if holder is None:  # called outside the update processor (a direct call in a test)
        holder = _Scope()
        _scope.set(holder)
    holder.mark = UpdateMark(channel, update_id, at, marks)
    return holder.mark


def handler_failed() -> None:
    """The handler raised: leave the update undone unless its effects were committed."""
    mark = current()
    if mark is not None:
        mark.failed = True


# -- the write-session hooks -----------------------------------------------------------------


@event.listens_for(WriteSession, "after_flush")
def _flushed(session: Session, _context) -> None:
    # A flush only runs when something changed (a clean session returns early).
    session.info["wrote"] = True


@event.listens_for(WriteSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


@event.listens_for(WriteSession, "before_commit")
def _before_commit(session: Session) -> None:
    wrote = session.info.pop("wrote", False)
    wrote = wrote or bool(session.new or session.dirty or session.deleted)
    mark = current()
    if mark is None or mark.committed or not wrote:
        return
    session.flush()
    try:  # on the connection, past the ORM hooks: this write is the mark itself
        session.connection().execute(
            ProcessedUpdate.__table__.insert().values(
                channel=mark.channel, update_id=mark.update_id, processed_at=mark.at
            )
        )
    except IntegrityError:
        mark.duplicate = True
        raise UpdateAlreadyHandled(mark.update_id) from None
    session.info["marking"] = mark


@event.listens_for(WriteSession, "after_commit")
def _after_commit(session: Session) -> None:
    session.info.pop("wrote", None)
    mark = session.info.pop("marking", None)
    if mark is not None:
        mark.committed = True


@event.listens_for(WriteSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("marking", None)
    session.info.pop("wrote", None)
