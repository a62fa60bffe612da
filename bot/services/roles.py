"""Role grants held at a unit."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Member, Role, RoleGrant, Unit


async def grant_role(
    session: AsyncSession, member: Member, unit: Unit, role: Role, at: datetime
) -> RoleGrant:
    """Grant `role` at `unit`, once: granting it again returns the grant in force."""
    existing = (
        await session.exec(
            select(RoleGrant).where(
                RoleGrant.member_id == member.id,
                RoleGrant.unit_id == unit.id,
                RoleGrant.role == role,
                col(RoleGrant.revoked_at).is_(None),
            )
        )
    ).first()
    if existing is not None:
        return existing
    grant = RoleGrant(member_id=member.id, unit_id=unit.id, role=role, granted_at=at)
    session.add(grant)
    return grant


async def roles_of(session: AsyncSession, member: Member) -> list[tuple[RoleGrant, Unit]]:
    rows = await session.exec(
        select(RoleGrant, Unit)
        .join(Unit, col(Unit.id) == RoleGrant.unit_id)
        .where(RoleGrant.member_id == member.id, col(RoleGrant.revoked_at).is_(None))
    )
    return list(rows.all())
