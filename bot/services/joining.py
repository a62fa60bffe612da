"""Joining with an invite: consent, then phone (unit-wide invites), then name if new."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatState, Invite, Member, Role, Unit
from bot.services import chat_state, tallies
from bot.services.errors import Refusal
from bot.services.invites import usable_invite
from bot.services.people import Person, link_identity, new_member
from bot.services.roles import grant_role
from bot.services.units import in_subtree
from bot.text import clean_name, normalize_phone

FLOW_CONSENT = "consent"
FLOW_PHONE = "join_phone"
FLOW_NAME = "join_name"
NAME_MAX = 100


class Step(StrEnum):
    ask_consent = "ask_consent"
    ask_phone = "ask_phone"
    ask_name = "ask_name"
    joined = "joined"
    already_joined = "already_joined"


@dataclass(frozen=True)
class JoinOutcome:
    step: Step
    unit: Unit | None = None
    member: Member | None = None
    role: Role = Role.member


async def start_with_code(
    session: AsyncSession, person: Person, code: str, at: datetime
) -> JoinOutcome:
    """/start CODE: check the invite, ask consent first if never given, then go on."""
    invite = await usable_invite(session, code, at)
    state = await chat_state.get_state(session, person.identity.id)
    if person.identity.consent_at is None:
        chat_state.put_state(
            session, state, person.identity.id, FLOW_CONSENT, 0, {"code": invite.code}, at
        )
        await session.commit()
        return JoinOutcome(Step.ask_consent)
    return await _continue(session, person, invite, state, at)


async def give_consent(session: AsyncSession, person: Person, at: datetime) -> JoinOutcome:
    """The person agreed to the personal-data notice; carry on with the invite they brought."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW_CONSENT:
        raise Refusal("common/stale_button")
    person.identity.consent_at = at
    session.add(person.identity)
    invite = await usable_invite(session, state.data["code"], at)
    return await _continue(session, person, invite, state, at)


async def decline_consent(session: AsyncSession, person: Person) -> None:
    state = await chat_state.get_state(session, person.identity.id)
    await chat_state.clear_state(session, state)
    await session.commit()


async def _continue(
    session: AsyncSession, person: Person, invite: Invite, state: ChatState | None, at: datetime
) -> JoinOutcome:
    unit = await session.get(Unit, invite.unit_id)
    assert unit is not None
    if person.member is not None:
        return await _already_member(session, person, invite, unit, state, at)
    if invite.member_id is not None:
        member = await session.get(Member, invite.member_id)
        if member is None or not member.active:
            raise Refusal("start/invite_expired")
        return await _finish(session, person, invite, unit, member, state, at)
    chat_state.put_state(
        session, state, person.identity.id, FLOW_PHONE, 0, {"invite_id": invite.id}, at
    )
    await session.commit()
    return JoinOutcome(Step.ask_phone, unit=unit, role=invite.role)


async def _already_member(
    session: AsyncSession,
    person: Person,
    invite: Invite,
    unit: Unit,
    state: ChatState | None,
    at: datetime,
) -> JoinOutcome:
    """Starting again never makes a second member; an officer/leader invite adds the role."""
    assert person.member is not None and person.unit is not None
    await chat_state.clear_state(session, state)
    if invite.role != Role.member:
        await grant_role(session, person.member, unit, invite.role, at)
        invite.uses += 1
        session.add(invite)
        await session.commit()
        return JoinOutcome(Step.joined, unit=unit, member=person.member, role=invite.role)
    await session.commit()
    if not person.unit.path.startswith(unit.path):
        raise Refusal("start/member_elsewhere", unit_name=person.unit.name)
    return JoinOutcome(Step.already_joined, unit=person.unit, member=person.member)


async def share_phone(
    session: AsyncSession,
    person: Person,
    phone_raw: str,
    contact_user_id: str | None,
    at: datetime,
) -> JoinOutcome:
    """The contact button answered. Only the person's own number counts."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW_PHONE:
        raise Refusal("join/phone_not_expected")
    if contact_user_id != person.identity.external_user_id:
        raise Refusal("join/phone_not_own")
    phone = normalize_phone(phone_raw)
    if phone is None:
        raise Refusal("join/phone_invalid")
    invite = await usable_invite_by_id(session, state.data["invite_id"], at)
    unit = await session.get(Unit, invite.unit_id)
    assert unit is not None
    member = (await session.exec(select(Member).where(Member.phone == phone))).first()
    if member is not None:
        member_unit = await session.get(Unit, member.unit_id)
        inside = (
            await session.exec(select(Unit.id).where(Unit.id == member.unit_id, in_subtree(unit)))
        ).first()
        if inside is None or not member.active or member_unit is None:
            raise Refusal("join/phone_elsewhere")
        return await _finish(session, person, invite, unit, member, state, at)
    chat_state.put_state(
        session,
        state,
        person.identity.id,
        FLOW_NAME,
        0,
        {"invite_id": invite.id, "phone": phone},
        at,
    )
    await session.commit()
    return JoinOutcome(Step.ask_name, unit=unit, role=invite.role)


async def give_name(session: AsyncSession, person: Person, text: str, at: datetime) -> JoinOutcome:
    """A new member typed their full name: create them in the invite's unit."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW_NAME:
        raise Refusal("join/name_not_expected")
    name = clean_name(text)
    words = name.split(" ")
    if (
        len(name) > NAME_MAX
        or len(words) < 2
        or any(ch.isdigit() for ch in name)
        or not all(any(ch.isalpha() for ch in word) for word in words)
    ):
        raise Refusal("join/name_invalid", limit=NAME_MAX)
    invite = await usable_invite_by_id(session, state.data["invite_id"], at)
    unit = await session.get(Unit, invite.unit_id)
    assert unit is not None
    member = new_member(unit, name, state.data["phone"], at)
    session.add(member)
    try:
        await session.flush()
    except IntegrityError:  # the same phone joined from another account meanwhile
        await session.rollback()
        raise Refusal("join/phone_elsewhere") from None
    await tallies.counted_new(session, member.id)
    return await _finish(session, person, invite, unit, member, state, at)


async def usable_invite_by_id(session: AsyncSession, invite_id: int, at: datetime) -> Invite:
    invite = await session.get(Invite, invite_id)
    if invite is None:
        raise Refusal("start/invite_unknown")
    return await usable_invite(session, invite.code, at)


async def _finish(
    session: AsyncSession,
    person: Person,
    invite: Invite,
    unit: Unit,
    member: Member,
    state: ChatState | None,
    at: datetime,
) -> JoinOutcome:
    await link_identity(session, person.identity, member)
    if invite.role != Role.member:
        await grant_role(session, member, unit, invite.role, at)
    invite.uses += 1
    session.add(invite)
    await chat_state.clear_state(session, state)
    await session.commit()
    member_unit = await session.get(Unit, member.unit_id)
    return JoinOutcome(Step.joined, unit=member_unit, member=member, role=invite.role)
