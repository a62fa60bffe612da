"""The stored per-unit counts always equal a count from scratch, whatever happened.

Random sequences of what members and officers do (join, join again from a new phone account,
block and unblock the bot, write again after blocking, pledge on time or late, approve or
return a pledge, transfer, deactivate and reactivate a member) run through the real services
on a fresh SQLite database; after each sequence the stored counts
(`tallies.stored`) must equal the counts recomputed from the members (`counted_from_scratch`),
and the summary a leader sees must add up to the same numbers.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from bot.clock import Clock
from bot.db import Database
from bot.models import Member, OutboxMessage, Pledge, Role, Unit
from bot.runtime import make_services
from bot.services import (
    campaigns,
    chat_state,
    joining,
    lifecycle,
    mute,
    outbox,
    pledges,
    review,
    summary,
    tallies,
)
from bot.services.errors import Refusal
from bot.services.invites import create_invite
from bot.services.people import load_person, new_member
from bot.services.roles import grant_role
from bot.settings import Settings
from bot.text import normalize_phone
from tests import factories

ON_TIME = datetime(2024, 4, 5, 1, 0, tzinfo=UTC)  # 5/4/2024: before the pledge's last day 9/4
LATE = datetime(2024, 4, 15, 1, 0, tzinfo=UTC)
ACCOUNTS = 6

unit_index = st.integers(0, 3)
account = st.integers(0, ACCOUNTS - 1)
operation = st.one_of(
    st.tuples(st.just("roster"), unit_index),  # a member on the roster, not on the bot yet
    st.tuples(st.just("join_new"), account, unit_index),  # a newcomer joins with a new phone
    st.tuples(st.just("join_phone"), account, st.integers(0, 20)),  # links a roster member
    st.tuples(st.just("block"), account),
    st.tuples(st.just("unblock"), account),
    st.tuples(st.just("write"), account),  # writing again clears a block
    st.tuples(st.just("bounce"), account),  # a queued message finds the bot blocked
    st.tuples(st.just("pledge"), account, st.booleans()),  # True: after the deadline
    st.tuples(st.just("approve"), account),
    st.tuples(st.just("return"), account),
    st.tuples(st.just("transfer"), st.integers(0, 30), unit_index),
    st.tuples(st.just("deactivate"), st.integers(0, 30)),
    st.tuples(st.just("reactivate"), st.integers(0, 30)),
)
REVIEWER_USER = 99


def _compose(locale: str, notice) -> tuple[str, None]:
    return "review notice", None


@dataclass
class World:
    svc: object
    units: list[Unit]
    phones: list[str] = field(default_factory=list)
    next_phone: int = 0
    reviewer_id: int = 0


async def _person(session, user: int, at: datetime):
    uid = str(1000 + user)
    return await load_person(session, "telegram", uid, uid, at)


async def _join(session, world: World, user: int, unit: Unit, phone: str, at: datetime):
    person = await _person(session, user, at)
    invite = await create_invite(session, unit, at)
    try:
        step = await joining.start_with_code(session, person, invite.code, at)
        if step.step == joining.Step.ask_consent:
            step = await joining.give_consent(session, person, at)
        if step.step == joining.Step.ask_phone:
            step = await joining.share_phone(
                session, person, phone, person.identity.external_user_id, at
            )
        if step.step == joining.Step.ask_name:
            await joining.give_name(session, person, "Nguyễn Văn Bình", at)
    except Refusal:
        await session.rollback()


def _phone(world: World) -> str:
    world.next_phone += 1
    return f"09{world.next_phone:08d}"


async def _do(session, world: World, op: tuple) -> None:
    kind, *args = op
    at = ON_TIME
    if kind == "roster":
        phone = normalize_phone(_phone(world))
        member = new_member(world.units[args[0]], "Trần Thị Hoa", phone, at)
        session.add(member)
        await session.flush()
        await tallies.counted_new(session, member.id)
        await session.commit()
        world.phones.append(member.phone)
    elif kind == "join_new":
        phone = _phone(world)
        await _join(session, world, args[0], world.units[args[1]], phone, at)
    elif kind == "join_phone":
        if not world.phones:
            return
        phone = world.phones[args[1] % len(world.phones)]
        member = (await session.exec(select(Member).where(Member.phone == phone))).one()
        unit = await session.get(Unit, member.unit_id)
        await _join(session, world, args[0], unit, phone, at)
    elif kind in ("block", "unblock"):
        person = await _person(session, args[0], at)
        await mute.set_blocked(session, person.identity, kind == "block", at)
    elif kind == "write":
        await _person(session, args[0], at)
    elif kind == "bounce":
        identity = (await _person(session, args[0], at)).identity
        message = OutboxMessage(
            dedupe_key=f"t:{identity.id}:{world.next_phone}",
            kind="test",
            identity_id=identity.id,
            chat_id=identity.chat_id,
            text="x",
        )
        world.next_phone += 1
        session.add(message)
        await session.commit()
        await outbox.mark_blocked(session, message, at)
    elif kind == "pledge":
        await _pledge(session, args[0], LATE if args[1] else ON_TIME)
    elif kind in ("approve", "return"):
        await _review(session, world, args[0], kind)
    elif kind in ("transfer", "deactivate", "reactivate"):
        members = (await session.exec(select(Member).order_by(Member.id))).all()
        member = members[args[0] % len(members)]
        if member.id == world.reviewer_id:
            return
        try:
            if kind == "transfer":
                await lifecycle.transfer(session, member, world.units[args[1]], at)
            elif kind == "deactivate":
                await lifecycle.deactivate(session, member, at)
            else:
                await lifecycle.reactivate(session, member, at)
        except Refusal:
            await session.rollback()


async def _review(session, world: World, user: int, kind: str) -> None:
    """The officer approves or returns the user's pledge (when there is one to decide)."""
    tz = Settings(_env_file=None).tz
    person = await _person(session, user, ON_TIME)
    if person.member is None:
        return
    pledge = (
        await session.exec(select(Pledge).where(Pledge.member_id == person.member.id))
    ).first()
    if pledge is None or pledge.current_version == 0:
        return
    reviewer = await session.get(Member, world.reviewer_id)
    pledge_id, version = pledge.id, pledge.current_version
    officer_identity = (await _person(session, REVIEWER_USER, ON_TIME)).identity.id
    try:
        if kind == "approve":
            await review.approve(session, reviewer, pledge_id, version, ON_TIME, _compose)
        else:
            await review.start_return(
                session, reviewer, officer_identity, pledge_id, version, ON_TIME
            )
            await review.return_comment(
                session, reviewer, officer_identity, "Cần cụ thể hơn", ON_TIME
            )
            await review.return_by(
                session,
                reviewer,
                officer_identity,
                ON_TIME.astimezone(tz).date() + timedelta(days=7),
                None,
                ON_TIME,
                tz,
                _compose,
            )
    except Refusal:  # decided already, or the member left: nothing changes
        await session.rollback()
        await chat_state.clear_state(session, await chat_state.get_state(session, officer_identity))
        await session.commit()


async def _pledge(session, user: int, at: datetime) -> None:
    tz = Settings(_env_file=None).tz
    person = await _person(session, user, at)
    if person.member is None:
        return
    in_force = await campaigns.in_force_for_unit(session, person.unit, at.astimezone(tz).date())
    assert in_force is not None
    try:
        view = await pledges.open_wizard(session, person, in_force, at, tz)
        while view.step < view.total:
            view = await pledges.answer(session, person, in_force, "Học tập và làm theo", at)
        await pledges.submit(session, person, in_force, view.version, at, tz)
    except Refusal:  # revising after the deadline is refused: nothing changes
        await session.rollback()


async def _run(ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 't.db'}"
        settings_ = Settings(DATABASE_URL=url, _env_file=None)
        db = Database(url)
        await db.create_all()
        svc = make_services(settings_, clock=Clock(settings_.tz, start=ON_TIME), db=db)
        try:
            async with db.session() as session:
                union = await factories.make_union(session, svc)
                province_id = union.province.id
                world = World(svc, [union.school, union.factory, union.district, union.school])
                reviewer = await factories.make_member(
                    session, svc, union.district, "Lê Văn Cán Bộ"
                )
                world.reviewer_id = reviewer.id
                await factories.link(session, svc, reviewer, 1000 + REVIEWER_USER)
                for unit in (union.district, union.school, union.factory):
                    await grant_role(session, reviewer, unit, Role.officer, ON_TIME)
                await session.commit()
                for op in ops:
                    for unit in world.units:  # a refused step rolled back and expired them
                        await session.refresh(unit)
                    await _do(session, world, op)
                stored = await tallies.stored(session)
                assert stored == await tallies.counted_from_scratch(session)
                figures = await summary.for_unit(session, province_id, ON_TIME, settings_.tz)
                roster, pledged = stored
                assert figures.total.active == sum(c["active"] for c in roster.values())
                assert figures.total.on_bot == sum(c["on_bot"] for c in roster.values())
                assert figures.total.late == sum(c["late"] for c in pledged.values())
                assert figures.total.on_time == sum(c["on_time"] for c in pledged.values())
                assert figures.total.approved == sum(c["approved"] for c in pledged.values())
        finally:
            await db.dispose()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=25))
def test_stored_counts_equal_a_count_from_scratch(ops):
    asyncio.run(_run(ops))


def test_a_typical_sequence_is_counted():
    """A fixed story (the property above explores the rest): two join, one blocks, both pledge."""
    asyncio.run(
        _run(
            [
                ("roster", 0),
                ("join_phone", 0, 0),
                ("join_new", 1, 1),
                ("pledge", 0, False),
                ("pledge", 1, True),
                ("block", 1),
                ("join_phone", 2, 0),  # the first member's new phone account
                ("bounce", 2),
                ("write", 2),
                ("approve", 0),
                ("return", 1),
                ("pledge", 1, False),
                ("transfer", 1, 1),
                ("deactivate", 2),
                ("reactivate", 2),
            ]
        )
    )
