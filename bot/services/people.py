"""Chat identities and the members behind them."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatIdentity, Member, Unit
from bot.services import tallies
from bot.services.updates import Done, answered_column
from bot.text import clean_name, search_key
from bot.write_batch import Prepared, Write, prepared_guard, prepared_joined_guard


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
    person = await _person(session, channel, user_id)
    if person is not None and person.identity.blocked_at is None:
        return person
    if person is None:
        identity = ChatIdentity(
            channel=channel, external_user_id=user_id, chat_id=chat_id, created_at=at
        )
        session.add(identity)
        try:
            await session.commit()
        except IntegrityError:  # another process recorded the same account a moment ago
            await session.rollback()
        person = await _person(session, channel, user_id)
        assert person is not None
    if person.identity.blocked_at is not None:
        # They are writing to us, so they unblocked the bot (even if that update was lost).
        identity = person.identity
        async with tallies.tracking(session, *_member_ids(identity)):
            identity.blocked_at = None
            session.add(identity)
        await session.commit()
    return person


async def known_person(session: AsyncSession, channel: str, user_id: str) -> Person | None:
    """The person, when reading them needs no write (a known account that has not blocked
    the bot); None otherwise, and `load_person` in a write session does the rest."""
    person = await _person(session, channel, user_id)
    if person is None or person.identity.blocked_at is not None:
        return None
    return person


async def person_and_done(
    session: AsyncSession, channel: str, user_id: str, update_id: int
) -> tuple[Person | None, Done | None]:
    """The person (as `_person`) and what is known of `update_id`, in one statement; None
    for it when the account is unknown (then nothing was read about the update)."""
    params = {"channel": channel, "user_id": user_id, "update_id": update_id}
    row = (await session.exec(_PERSON_AND_DONE, params=params)).first()
    if row is None:
        return None, None
    identity, member, unit, answered = row
    return _as_person(identity, member, unit), Done.of(answered)


# Built once with bound parameters: every update asks this, and building the expression
# (column comparisons, joins) cost more than running it.
_PERSON = (
    select(ChatIdentity, Member, Unit)
    .outerjoin(
        Member,
        and_(col(Member.id) == ChatIdentity.member_id, col(Member.active).is_(True)),
    )
    .outerjoin(Unit, col(Unit.id) == Member.unit_id)
    .where(
        ChatIdentity.channel == bindparam("channel"),
        ChatIdentity.external_user_id == bindparam("user_id"),
    )
)
_PERSON_AND_DONE = _PERSON.add_columns(
    answered_column(bindparam("channel"), bindparam("update_id"))
)


def _as_person(identity: ChatIdentity, member: Member | None, unit: Unit | None) -> Person:
    inactive = identity.member_id is not None and member is None
    return Person(identity=identity, member=member, unit=unit, inactive=inactive)


async def _person(session: AsyncSession, channel: str, user_id: str) -> Person | None:
    """The identity with its active member and unit, in one statement."""
    row = (await session.exec(_PERSON, params={"channel": channel, "user_id": user_id})).first()
    return _as_person(*row) if row is not None else None


def unchanged(person: Person) -> list[Write]:
    """Group-path guards (bot.write_batch) that who is writing is still as read: the
    account still linked to the member and not blocked, the member still active in the
    same unit. A turn on that path may take the person from the read cache, which cannot
    hear of the command line changing the same SQLite file; its writes then go in only if
    the database still says the same, and otherwise the turn is redone on the ORM path."""
    identity, member = person.identity, person.member
    seen = {"seen_id": identity.id, "seen_member_id": identity.member_id,
            "seen_blocked_at": identity.blocked_at}
    if member is None:
        return [_identity_guard().bind(seen)]
    seen |= {"member_id": member.id, "member_unit_id": member.unit_id,
             "member_active": member.active}
    return [_person_guard().bind(seen)]


_IDENTITY_MATCH = ("id", "member_id", "blocked_at")


@functools.cache
def _identity_guard() -> Prepared:
    return prepared_guard(ChatIdentity.__table__, match=_IDENTITY_MATCH)


@functools.cache
def _person_guard() -> Prepared:
    """The account and its member as read, in one statement."""
    identity, member = ChatIdentity.__table__, Member.__table__
    return prepared_joined_guard(
        identity.join(member, identity.c.member_id == member.c.id),
        {"seen": (identity, _IDENTITY_MATCH), "member": (member, ("id", "unit_id", "active"))},
    )


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
