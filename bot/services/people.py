"""Chat identities and the members behind them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatIdentity, Member, Unit
from bot.services import tallies
from bot.text import clean_name, search_key


@dataclass
class Person:
    """Who is writing: their chat identity, and the member and unit once they joined."""

    identity: ChatIdentity
    member: Member | None
    unit: Unit | None
    inactive: bool = False  # linked to a member who left the union (deactivated)

    @property
    def joined(self) -> bool:
        return self.member is not None


async def load_person(
    session: AsyncSession, channel: str, user_id: str, chat_id: str, at: datetime
) -> Person:
    """Find (or first record) the identity for this account and the active member behind it."""
    identity = await _identity(session, channel, user_id)
    if identity is None:
        identity = ChatIdentity(
            channel=channel, external_user_id=user_id, chat_id=chat_id, created_at=at
        )
        session.add(identity)
        try:
            await session.commit()
        except IntegrityError:  # another process recorded the same account a moment ago
            await session.rollback()
            identity = await _identity(session, channel, user_id)
            assert identity is not None
    if identity.blocked_at is not None:
        # They are writing to us, so they unblocked the bot (even if that update was lost).
        async with tallies.tracking(session, *_member_ids(identity)):
            identity.blocked_at = None
            session.add(identity)
        await session.commit()
    member = unit = None
    if identity.member_id is not None:
        row = (
            await session.exec(
                select(Member, Unit)
                .join(Unit, col(Unit.id) == Member.unit_id)
                .where(Member.id == identity.member_id, col(Member.active).is_(True))
            )
        ).first()
        if row is not None:
            member, unit = row
    inactive = identity.member_id is not None and member is None
    return Person(identity=identity, member=member, unit=unit, inactive=inactive)


async def _identity(session: AsyncSession, channel: str, user_id: str) -> ChatIdentity | None:
    return (
        await session.exec(
            select(ChatIdentity).where(
                ChatIdentity.channel == channel, ChatIdentity.external_user_id == user_id
            )
        )
    ).first()


async def record_consent(session: AsyncSession, identity: ChatIdentity, at: datetime) -> None:
    identity.consent_at = at
    session.add(identity)
    await session.commit()


async def set_locale(session: AsyncSession, identity: ChatIdentity, locale: str) -> None:
    identity.locale = locale
    session.add(identity)
    await session.commit()


def new_member(unit: Unit, full_name: str, phone: str | None, at: datetime) -> Member:
    name = clean_name(full_name)
    return Member(
        unit_id=unit.id, full_name=name, name_key=search_key(name), phone=phone, created_at=at
    )


async def link_identity(session: AsyncSession, identity: ChatIdentity, member: Member) -> None:
    """Link this account to `member`, unlinking any older account of theirs on the channel.

    A member who changed phone joins again from the new account; the old one must stop
    receiving their pledge and reminders.
    """
    assert member.id is not None  # flushed, and counted with `tallies.counted_new` if new
    async with tallies.tracking(session, member.id, *_member_ids(identity)):
        older = await session.exec(
            select(ChatIdentity).where(
                ChatIdentity.member_id == member.id,
                ChatIdentity.channel == identity.channel,
                ChatIdentity.id != identity.id,
            )
        )
        for old in older.all():
            old.member_id = None
            session.add(old)
        identity.member_id = member.id
        session.add(identity)


def _member_ids(identity: ChatIdentity) -> tuple[int, ...]:
    """The member behind an identity, as arguments for `tallies.tracking`."""
    return (identity.member_id,) if identity.member_id is not None else ()
