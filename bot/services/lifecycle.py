"""A member's life on the roster: found by name, moved to another unit, leaving and coming back.

Every change is wrapped in `tallies.tracking` (the stored counts follow it) and writes a
MemberEvent: who did it (`by`; None is the admin's CLI), from which unit to which, when.
A deactivated member keeps their pledges and history and their chat identity; they drop
out of every count, list and reminder because those read active members only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    Campaign,
    ChatIdentity,
    Member,
    MemberEvent,
    MemberEventKind,
    Pledge,
    PledgeStatus,
    RoleGrant,
    Unit,
)
from bot.services import campaigns, tallies
from bot.services.authorization import Action, units_for
from bot.services.errors import Refusal
from bot.services.roles import end_all_roles
from bot.text import given_name_sort_key, search_key

SEARCH_LIMIT = 10
SEARCH_MIN = 2


@dataclass(frozen=True)
class MemberCard:
    member: Member
    unit: Unit
    on_bot: bool
    pledge: str  # none | draft | on_time | late | no_campaign
    roles: list[tuple[str, Unit]]


async def search(
    session: AsyncSession, tops: list[Unit], text: str, limit: int = SEARCH_LIMIT
) -> list[tuple[Member, Unit]]:
    """Members (active or not) in these subtrees whose name contains `text`, diacritics
    ignored; sorted the Vietnamese way, by given name."""
    key = search_key(text)
    if len(key) < SEARCH_MIN:
        raise Refusal("members/search_short", minimum=SEARCH_MIN)
    if not tops:
        return []
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await session.exec(
        select(Member, Unit)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .where(
            or_(*(col(Unit.path).startswith(top.path) for top in tops)),
            col(Member.name_key).like(f"%{escaped}%", escape="\\"),
        )
        .limit(200)
    )
    found = sorted(rows.all(), key=lambda pair: given_name_sort_key(pair[0].full_name))
    return found[:limit]


def units_below(tops: list[Unit], units: list[Unit], limit: int = 20) -> list[Unit]:
    """The units inside these subtrees, in tree order, the first `limit`."""
    inside = [u for u in units if any(u.path.startswith(top.path) for top in tops)]
    inside.sort(key=lambda u: [int(p) for p in u.path.strip("/").split("/")])
    return inside[:limit]


async def subtree_units(session: AsyncSession, tops: list[Unit], limit: int = 20) -> list[Unit]:
    if not tops:
        return []
    rows = await session.exec(
        select(Unit).where(or_(*(col(Unit.path).startswith(top.path) for top in tops)))
    )
    return units_below(tops, list(rows.all()), limit)


async def in_reach(session: AsyncSession, actor: Member | None, unit: Unit, action: Action) -> bool:
    return any(unit.path.startswith(top.path) for top in await units_for(session, actor, action))


async def card(session: AsyncSession, member: Member, today: date) -> MemberCard:
    unit = await session.get(Unit, member.unit_id)
    assert unit is not None
    on_bot = (
        await session.exec(
            select(ChatIdentity.id).where(
                ChatIdentity.member_id == member.id, col(ChatIdentity.blocked_at).is_(None)
            )
        )
    ).first() is not None
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    status = "no_campaign"
    if in_force is not None:
        pledge = (
            await session.exec(
                select(Pledge)
                .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
                .where(Pledge.member_id == member.id, Campaign.year == in_force.campaign.year)
            )
        ).first()
        if pledge is None:
            status = "none"
        elif pledge.status == PledgeStatus.draft:
            status = "draft"
        else:
            status = "late" if pledge.late else "on_time"
    roles = (
        await session.exec(
            select(RoleGrant.role, Unit)
            .join(Unit, col(Unit.id) == RoleGrant.unit_id)
            .where(RoleGrant.member_id == member.id, col(RoleGrant.revoked_at).is_(None))
        )
    ).all()
    return MemberCard(member, unit, on_bot, status, [(r.value, u) for r, u in roles])


async def _check_actor(
    session: AsyncSession, by: Member | None, member: Member, unit: Unit | None = None
) -> None:
    """In chat, the member (and the destination) must lie in the officer's subtree."""
    if by is None:
        return
    home = await session.get(Unit, member.unit_id)
    if home is None or not await in_reach(session, by, home, Action.manage_roster):
        raise Refusal("members/out_of_scope")
    if unit is not None and not await in_reach(session, by, unit, Action.manage_roster):
        above = await common_ancestor(session, home, unit)
        raise Refusal("members/transfer_outside", member=member, unit=unit, above=above)


async def common_ancestor(session: AsyncSession, one: Unit, other: Unit) -> Unit | None:
    """The lowest unit above both: its officers (or the admin) can move a member across."""
    mine = [p for p in one.path.strip("/").split("/") if p]
    theirs = [p for p in other.path.strip("/").split("/") if p]
    shared = None
    for a, b in zip(mine, theirs, strict=False):
        if a != b:
            break
        shared = int(a)
    return await session.get(Unit, shared) if shared is not None else None


def _event(member: Member, kind: MemberEventKind, at: datetime, by: Member | None, **units):
    return MemberEvent(
        member_id=member.id,
        kind=kind,
        by_member_id=by.id if by else None,
        at=at,
        from_unit_id=units.get("from_unit"),
        to_unit_id=units.get("to_unit"),
    )


async def transfer(
    session: AsyncSession, member: Member, to: Unit, at: datetime, by: Member | None = None
) -> Unit:
    """Move the member to `to`; their counts move with them. Returns the unit they left."""
    await _check_actor(session, by, member, to)
    source = await session.get(Unit, member.unit_id)
    assert source is not None
    if source.id == to.id:
        raise Refusal("members/same_unit", member=member, unit=to)
    async with tallies.tracking(session, member.id):
        member.unit_id = to.id
        member.updated_at = at
        session.add(member)
        session.add(
            _event(member, MemberEventKind.transferred, at, by, from_unit=source.id, to_unit=to.id)
        )
    await session.commit()
    return source


async def deactivate(
    session: AsyncSession, member: Member, at: datetime, by: Member | None = None
) -> list[RoleGrant]:
    """The member left the union: out of counts and reminders, roles ended, history kept."""
    await _check_actor(session, by, member)
    if by is not None and by.id == member.id:
        raise Refusal("members/not_yourself")
    if not member.active:
        raise Refusal("members/already_inactive", member=member)
    async with tallies.tracking(session, member.id):
        member.active = False
        member.left_at = at
        member.updated_at = at
        session.add(member)
        ended = await end_all_roles(session, member, at, by)
        session.add(_event(member, MemberEventKind.deactivated, at, by, from_unit=member.unit_id))
    await session.commit()
    return ended


async def reactivate(
    session: AsyncSession, member: Member, at: datetime, by: Member | None = None
) -> None:
    """Back in the union (roles are not given back: grant them again if still held)."""
    await _check_actor(session, by, member)
    if member.active:
        raise Refusal("members/already_active", member=member)
    async with tallies.tracking(session, member.id):
        member.active = True
        member.left_at = None
        member.updated_at = at
        session.add(member)
        session.add(_event(member, MemberEventKind.reactivated, at, by, to_unit=member.unit_id))
    await session.commit()
