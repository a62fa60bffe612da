"""Multi-step flows kept as rows: which flow a chat is in, at which step, with what data."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatState
from bot.read_batch import PreparedRead, Read, Row
from bot.write_batch import Prepared, Write, prepared_delete, prepared_insert, prepared_update


@dataclass(frozen=True, slots=True)
class StateSeen:
    """A chat's state as read on the group path (bot.read_batch): plain values, no
    session, written back only behind its version (`put_write`)."""

    identity_id: int
    flow: str
    step: int
    version: int
    data: dict[str, Any]

    @classmethod
    def of(cls, row: Row) -> StateSeen | None:
        """From the `SEEN_COLUMNS` at the start of `row`; None for an outer join's NULLs."""
        if row[0] is None:
            return None
        return cls(*row[:5])


# What a group-path read selects for a StateSeen, in its order.
SEEN_COLUMNS = (ChatState.identity_id, ChatState.flow, ChatState.step, ChatState.version,
                ChatState.data)


async def get_state(session: AsyncSession, identity_id: int) -> ChatState | None:
    """The chat's state, locked for the rest of the transaction on PostgreSQL.

    SQLite's BEGIN IMMEDIATE already serialises writers, so the lock is only needed where
    two processes may handle the same chat at once.
    """
    # Already read (and locked) in this transaction: the router reads the state to pick
    # the flow, then the flow's service reads it again; the second read is the same row.
    transaction = session.sync_session.get_transaction()
    known = session.info.get(_LOCKED)
    if known is not None and transaction is not None and known[0] is transaction:
        state = known[1].get(identity_id)
        if state is not None and state in session and state not in session.deleted:
            return state
    state = (await session.exec(_STATE, params={"identity_id": identity_id})).first()
    if state is not None and transaction is not None:
        if known is None or known[0] is not transaction:
            known = session.info[_LOCKED] = (transaction, {})
        known[1][identity_id] = state
    return state


# Built once: every typed message and button press reads it.
_STATE = (
    select(ChatState).where(ChatState.identity_id == bindparam("identity_id")).with_for_update()
)
_LOCKED = "chat_states_locked"  # session.info key: (transaction, {identity_id: ChatState})


def put_state(
    session: AsyncSession,
    state: ChatState | None,
    identity_id: int,
    flow: str,
    step: int,
    data: dict[str, Any],
    at: datetime,
) -> ChatState:
    """Move the chat to (flow, step); the version grows so older buttons turn stale."""
    if state is None:
        state = ChatState(
            identity_id=identity_id, flow=flow, step=step, version=1, data=data, updated_at=at
        )
    else:
        state.flow, state.step, state.data = flow, step, dict(data)
        state.version += 1
        state.updated_at = at
    session.add(state)
    return state


async def clear_state(session: AsyncSession, state: ChatState | None) -> None:
    if state is not None:
        await session.delete(state)


def put_write(
    state: ChatState | StateSeen | None,
    identity_id: int,
    flow: str,
    step: int,
    data: dict[str, Any],
    at: datetime,
) -> Write:
    """`put_state` as a grouped write (bot.write_batch): over the state as read, only if no
    other turn moved the chat since (its version tells), or as the chat's first state, only
    if none appeared meanwhile."""
    values = {
        "new_identity_id": identity_id,
        "new_flow": flow,
        "new_step": step,
        "new_version": (state.version if state is not None else 0) + 1,
        "new_data": dict(data),
        "new_updated_at": at,
    }
    if state is None:
        return _first_statement().bind(values)
    return _moved_statement().bind(
        values | {"seen_identity_id": state.identity_id, "seen_version": state.version}
    )


@functools.cache
def _first_statement() -> Prepared:
    return prepared_insert(ChatState.__table__, _STATE_COLUMNS, if_absent=True)


@functools.cache
def _moved_statement() -> Prepared:
    columns = [name for name in _STATE_COLUMNS if name != "identity_id"]
    return prepared_update(ChatState.__table__, match=("identity_id", "version"), assign=columns)


_STATE_COLUMNS = ("identity_id", "flow", "step", "version", "data", "updated_at")


def clear_write(state: ChatState | StateSeen) -> Write:
    """`clear_state` as a grouped write: only if no other turn moved the chat since."""
    return _clear_statement().bind(
        {"seen_identity_id": state.identity_id, "seen_version": state.version}
    )


@functools.cache
def _clear_statement() -> Prepared:
    return prepared_delete(ChatState.__table__, match=("identity_id", "version"))


def seen_read(identity_id: int) -> Read:
    """The chat's state as a group-path read (bot.read_batch); its rows make a StateSeen."""
    return _seen_read().bind({"identity_id": identity_id})


@functools.cache
def _seen_read() -> PreparedRead:
    return PreparedRead.of(
        select(*SEEN_COLUMNS).where(ChatState.identity_id == bindparam("identity_id"))
    )
