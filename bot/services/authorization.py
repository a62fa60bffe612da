"""The one place that decides what a person may see or do for a unit.

Roles are held at a unit and reach its whole subtree for aggregates; the text of a member's
pledge is read only by that member and by the officers and leaders of their own CĐCS.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Member, Role, RoleGrant, Unit


class Action(StrEnum):
    view_pending = "view_pending"  # who has not pledged, by name (officers, leaders)
    view_summary = "view_summary"  # aggregate figures (leaders, officers)


_ROLES_FOR = {
    Action.view_pending: (Role.officer, Role.leader),
    Action.view_summary: (Role.leader, Role.officer),
}


async def units_for(session: AsyncSession, member: Member | None, action: Action) -> list[Unit]:
    """The units at which `member` may do `action` (each reaches its subtree)."""
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
    units = list({unit.id: unit for unit in rows.all()}.values())
    # A grant below another grant of the same person adds nothing: keep the top ones.
    return [u for u in units if not any(o is not u and u.path.startswith(o.path) for o in units)]


async def may(session: AsyncSession, member: Member | None, action: Action, unit: Unit) -> bool:
    return any(unit.path.startswith(top.path) for top in await units_for(session, member, action))
