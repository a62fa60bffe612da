"""The outbox: every message the bot sends on its own is a row, claimed, sent and marked.

Queueing is idempotent on `dedupe_key`. Claiming takes a lease, with `UPDATE … RETURNING`
on SQLite (whose writers are serialised by BEGIN IMMEDIATE) and `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so two processes never claim the same row; a row whose lease ran out (its
process died mid-send) is claimed again. What a crash can repeat is bounded: the rows that
were in flight plus those sent but not yet marked, which the worker marks in groups at least
every 50 ms (see scheduler/outbox_worker.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatIdentity, OutboxMessage, OutboxStatus
from bot.services import tallies

LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 5
RETRY_BACKOFF = timedelta(seconds=30)


@dataclass(frozen=True)
class Queued:
    """One message to queue; the service does not know Telegram, only text and markup."""

    dedupe_key: str
    kind: str
    identity_id: int | None
    chat_id: str
    text: str
    reply_markup: dict[str, Any] | None = None
    photo: str | None = None  # a Telegram file_id: sent as a photo with `text` as its caption
    broadcast_id: int | None = None


def _insert(session: AsyncSession):
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    return pg_insert if dialect == "postgresql" else sqlite_insert


def insert_ignoring_duplicates(session: AsyncSession, model, rows: list[dict[str, Any]]):
    """INSERT … ON CONFLICT DO NOTHING: what is already there stays, once."""
    return _insert(session)(model).values(rows).on_conflict_do_nothing()


async def enqueue(session: AsyncSession, messages: list[Queued], at: datetime) -> dict[str, int]:
    """Queue messages (a key already queued is left alone); returns key -> outbox id.

    Does not commit: the caller records why it queued them in the same transaction.
    """
    if not messages:
        return {}
    rows = [
        {
            "dedupe_key": m.dedupe_key,
            "kind": m.kind,
            "identity_id": m.identity_id,
            "chat_id": m.chat_id,
            "text": m.text,
            "reply_markup": m.reply_markup,
            "photo": m.photo,
            "broadcast_id": m.broadcast_id,
            "status": OutboxStatus.pending.value,
            "attempts": 0,
            "not_before": at,
            "created_at": at,
        }
        for m in messages
    ]
    for start in range(0, len(rows), 500):
        await session.exec(
            insert_ignoring_duplicates(session, OutboxMessage, rows[start : start + 500])
        )
    keys = [m.dedupe_key for m in messages]
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        result = await session.exec(
            select(OutboxMessage.dedupe_key, OutboxMessage.id).where(
                col(OutboxMessage.dedupe_key).in_(keys[start : start + 500])
            )
        )
        found.update({key: id_ for key, id_ in result.all()})
    return found


def _claimable(now: datetime):
    return or_(
        and_(OutboxMessage.status == OutboxStatus.pending, OutboxMessage.not_before <= now),
        and_(OutboxMessage.status == OutboxStatus.claimed, OutboxMessage.claimed_until < now),
    )


async def claim(
    session: AsyncSession, worker: str, now: datetime, limit: int = 50
) -> list[OutboxMessage]:
    """Take up to `limit` due messages for this worker, under a lease, and commit."""
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    pick = select(OutboxMessage.id).where(_claimable(now)).order_by(OutboxMessage.id).limit(limit)
    if postgres:
        pick = pick.with_for_update(skip_locked=True)
    ids = list((await session.exec(pick)).scalars().all()) if postgres else None
    stmt = (
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(ids if postgres else pick.scalar_subquery()))
        .where(_claimable(now))
        .values(
            status=OutboxStatus.claimed,
            claimed_by=worker,
            claimed_until=now + LEASE,
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(OutboxMessage)
    )
    if postgres and not ids:
        await session.commit()
        return []
    claimed = list((await session.exec(stmt)).scalars().all())
    await session.commit()
    return sorted(claimed, key=lambda m: m.id)


async def _set(session: AsyncSession, message_id: int, **values: Any) -> None:
    """Settle a claimed row; one cancelled meanwhile (a broadcast stopped) stays cancelled."""
    await session.exec(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.claimed)
        .values(**values)
    )
    await session.commit()


async def mark_sent(session: AsyncSession, message_ids: list[int], at: datetime) -> None:
    """Mark delivered rows in one statement: the worker groups them to spare the one writer."""
    if not message_ids:
        return
    await session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(message_ids))
        .values(status=OutboxStatus.sent, sent_at=at, claimed_until=None, last_error=None)
    )
    await session.commit()


async def mark_retry(
    session: AsyncSession, message: OutboxMessage, at: datetime, error: str
) -> bool:
    """Put a failed send back for later; after MAX_ATTEMPTS it is recorded as failed."""
    if message.attempts >= MAX_ATTEMPTS:
        await _set(
            session,
            message.id,
            status=OutboxStatus.failed,
            claimed_until=None,
            last_error=error[:500],
        )
        return False
    await _set(
        session,
        message.id,
        status=OutboxStatus.pending,
        claimed_until=None,
        not_before=at + RETRY_BACKOFF * message.attempts,
        last_error=error[:500],
    )
    return True


async def mark_blocked(session: AsyncSession, message: OutboxMessage, at: datetime) -> None:
    """The person blocked the bot: this message is not sent, and their identity is marked."""
    await session.exec(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id)
        .values(status=OutboxStatus.blocked, claimed_until=None, last_error="blocked")
    )
    if message.identity_id is not None:
        member_id = (
            await session.exec(
                select(ChatIdentity.member_id).where(ChatIdentity.id == message.identity_id)
            )
        ).scalar()
        async with tallies.tracking(session, *([member_id] if member_id is not None else [])):
            await session.exec(
                update(ChatIdentity)
                .where(
                    ChatIdentity.id == message.identity_id, col(ChatIdentity.blocked_at).is_(None)
                )
                .values(blocked_at=at)
            )
    await session.commit()


async def depth(session: AsyncSession) -> int:
    """How many messages are still to go (pending or claimed)."""
    result = await session.exec(
        select(func.count())
        .select_from(OutboxMessage)
        .where(col(OutboxMessage.status).in_([OutboxStatus.pending, OutboxStatus.claimed]))
    )
    return int(result.scalar_one())
