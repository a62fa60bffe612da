"""The one place that decides what a person may see or do for a unit.

Roles are held at a unit and reach its whole subtree for aggregates; the text of a member's
pledge is read only by that member and by the officers and leaders of their own CĐCS.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Member, Role, RoleGrant, Unit, UnitLevel


class Action(StrEnum):
    view_pending = "view_pending"  # who has not joined / pledged / awaits review, by name
    view_summary = "view_summary"  # aggregate figures, charts
    export = "export"  # member lists with their status as .xlsx
    review_pledge = "review_pledge"  # approve or return; enter a paper pledge (text rule too)
    manage_roster = "manage_roster"  # import, transfer, deactivate members
    invite = "invite"  # deep links and QR codes for a unit
    broadcast = "broadcast"  # notices to an audience in the subtree
    grant_role = "grant_role"  # grant or revoke officer/leader roles below
    send_report = "send_report"  # send the unit's report up; see what sub-units sent


_OFFICERS = (Role.officer, Role.leader)
_ROLES_FOR = {
    Action.view_pending: _OFFICERS,
    Action.view_summary: _OFFICERS,
    Action.export: _OFFICERS,
    Action.review_pledge: _OFFICERS,
    Action.manage_roster: _OFFICERS,
    Action.invite: _OFFICERS,
    Action.broadcast: _OFFICERS,
    Action.grant_role: (Role.leader,),
    Action.send_report: (Role.leader,),
}


async def _granted_units(
    session: AsyncSession, member: Member | None, action: Action
) -> list[Unit]:
    """Every unit where `member` holds a role allowing `action`, outer ones included."""
    if member is None or not member.active:
        return []
    rows = await session.exec(
        select(Unit)
        .join(RoleGrant, col(RoleGrant.unit_id) == Unit.id)
        .where(
            RoleGrant.member_id == member.id,
            col(RoleGrant.revoked_at).is_(None),
            col(RoleGrant.role).in_(_ROLES_FOR[action]),
        )
        .order_by(Unit.path)
    )
    return list({unit.id: unit for unit in rows.all()}.values())


async def units_for(session: AsyncSession, member: Member | None, action: Action) -> list[Unit]:
    """The units at which `member` may do `action` (each reaches its subtree)."""
    units = await _granted_units(session, member, action)
    # A grant below another grant of the same person adds nothing: keep the top ones.
    return [u for u in units if not any(o is not u and u.path.startswith(o.path) for o in units)]


async def may(session: AsyncSession, member: Member | None, action: Action, unit: Unit) -> bool:
    return any(unit.path.startswith(top.path) for top in await units_for(session, member, action))


async def may_read_pledge(session: AsyncSession, viewer: Member | None, owner: Member) -> bool:
    """The text of a pledge: its owner, and officers/leaders of the owner's own CĐCS.

    A role at the CĐCS or at a unit inside it that holds the owner counts; a role higher
    up the tree (district, province) reaches aggregates only.
    """
    if viewer is None or not viewer.active:
        return False
    if viewer.id == owner.id:
        return True
    unit = await session.get(Unit, owner.unit_id)
    if unit is None:
        return False
    grassroots = await grassroots_of(session, unit)
    # Every grant, not just the outermost: a district officer who is also an officer of
    # this CĐCS reads its pledges through the CĐCS grant.
    for held in await _granted_units(session, viewer, Action.review_pledge):
        if unit.path.startswith(held.path) and held.path.startswith(grassroots.path):
            return True
    return False


async def grassroots_of(session: AsyncSession, unit: Unit) -> Unit:
    """The CĐCS a unit belongs to: itself, or its nearest grassroots ancestor (a unit above
    grassroots level is its own answer, so a district's own members are read at the district)."""
    ids = [int(part) for part in unit.path.strip("/").split("/") if part]
    rows = await session.exec(select(Unit).where(col(Unit.id).in_(ids)))
    by_id = {u.id: u for u in rows.all()}
    for unit_id in reversed(ids):
        candidate = by_id.get(unit_id)
        if candidate is not None and candidate.level == UnitLevel.grassroots:
            return candidate
    return unit
