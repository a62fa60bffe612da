"""Officer and leader roles held at a unit: granting, revoking, and who may do either.

A role reaches the unit's whole subtree. The admin (CLI, `by=None`) may grant anything
anywhere. In chat a leader grants below themselves: an officer role at their own unit or
any unit below it (a union's executive committee names its own officers), a leader role
only at a unit strictly below theirs (nobody makes a peer or a superior). Revoking follows
the same rule, so a leader cannot revoke their own leader role or a peer's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Member, Role, RoleGrant, Unit
from bot.services.authorization import Action, units_for
from bot.services.errors import Refusal
from bot.text import normalize_phone

GRANTABLE = (Role.officer, Role.leader)


async def grant_role(
    session: AsyncSession,
    member: Member,
    unit: Unit,
    role: Role,
    at: datetime,
    by: Member | None = None,
) -> RoleGrant:
    """Grant `role` at `unit`, once: granting it again returns the grant in force (no commit)."""
    existing = await _grant_in_force(session, member, unit, role)
    if existing is not None:
        return existing
    grant = RoleGrant(
        member_id=member.id,
        unit_id=unit.id,
        role=role,
        granted_at=at,
        granted_by_member_id=by.id if by else None,
    )
    session.add(grant)
    return grant


async def _grant_in_force(
    session: AsyncSession, member: Member, unit: Unit, role: Role
) -> RoleGrant | None:
    return (
        await session.exec(
            select(RoleGrant).where(
                RoleGrant.member_id == member.id,
                RoleGrant.unit_id == unit.id,
                RoleGrant.role == role,
                col(RoleGrant.revoked_at).is_(None),
            )
        )
    ).first()


async def roles_of(session: AsyncSession, member: Member) -> list[tuple[RoleGrant, Unit]]:
    rows = await session.exec(
        select(RoleGrant, Unit)
        .join(Unit, col(Unit.id) == RoleGrant.unit_id)
        .where(RoleGrant.member_id == member.id, col(RoleGrant.revoked_at).is_(None))
    )
    return list(rows.all())


async def roles_grantable(session: AsyncSession, actor: Member | None, unit: Unit) -> list[Role]:
    """The roles `actor` may grant (or revoke) at `unit`, by the rule in the module docstring."""
    allowed: list[Role] = []
    for top in await units_for(session, actor, Action.grant_role):
        if not unit.path.startswith(top.path):
            continue
        if Role.officer not in allowed:
            allowed.append(Role.officer)
        if unit.id != top.id and Role.leader not in allowed:
            allowed.append(Role.leader)
    return allowed


async def may_grant(session: AsyncSession, actor: Member | None, unit: Unit, role: Role) -> bool:
    return role in await roles_grantable(session, actor, unit)


async def find_member(
    session: AsyncSession, phone: str | None = None, member_code: str | None = None
) -> Member:
    """The member with this phone number (any common writing) or member code."""
    if (phone is None) == (member_code is None):
        raise Refusal("cli/member_which")
    if phone is not None:
        normalized = normalize_phone(phone)
        found = None
        if normalized is not None:
            found = (await session.exec(select(Member).where(Member.phone == normalized))).first()
        if found is None:
            raise Refusal("cli/member_unknown", who=phone)
        return found
    assert member_code is not None
    rows = (
        await session.exec(select(Member).where(Member.member_code == member_code.strip()))
    ).all()
    if len(rows) != 1:
        raise Refusal(
            "cli/member_unknown" if not rows else "cli/member_code_ambiguous", who=member_code
        )
    return rows[0]


async def check_target(session: AsyncSession, member: Member, unit: Unit) -> None:
    member_unit = await session.get(Unit, member.unit_id)
    if not member.active:
        raise Refusal("roles/member_inactive", member=member)
    if member_unit is None or not member_unit.path.startswith(unit.path):
        raise Refusal("roles/member_outside", member=member, unit=unit, member_unit=member_unit)


async def grant(
    session: AsyncSession,
    member: Member,
    unit: Unit,
    role: Role,
    at: datetime,
    by: Member | None = None,
) -> tuple[RoleGrant, bool]:
    """Grant and commit; (grant, True if new). The member must be active in `unit`'s subtree;
    in chat (`by` set) the granter must be allowed to (see the module docstring)."""
    if role not in GRANTABLE:
        raise Refusal("roles/bad_role")
    if by is not None and not await may_grant(session, by, unit, role):
        raise Refusal("roles/not_yours", unit=unit, role=role.value)
    await check_target(session, member, unit)
    existing = await _grant_in_force(session, member, unit, role)
    if existing is not None:
        await session.commit()
        return existing, False
    made = await grant_role(session, member, unit, role, at, by)
    await session.commit()
    return made, True


async def revoke(
    session: AsyncSession,
    member: Member,
    unit: Unit,
    role: Role,
    at: datetime,
    by: Member | None = None,
) -> RoleGrant:
    """End the member's role at the unit (the row stays, with who ended it and when)."""
    if by is not None and not await may_grant(session, by, unit, role):
        raise Refusal("roles/not_yours", unit=unit, role=role.value)
    existing = await _grant_in_force(session, member, unit, role)
    if existing is None:
        raise Refusal("roles/not_held", member=member, unit=unit, role=role.value)
    _end(existing, at, by)
    await session.commit()
    return existing


async def revoke_grant(
    session: AsyncSession, grant_id: int, at: datetime, by: Member
) -> tuple[RoleGrant, Member, Unit]:
    """Revoke one grant by id from a chat button: checked again, never trusted."""
    row = await session.get(RoleGrant, grant_id)
    unit = await session.get(Unit, row.unit_id) if row else None
    member = await session.get(Member, row.member_id) if row else None
    if row is None or unit is None or member is None or row.revoked_at is not None:
        raise Refusal("common/stale_button")
    if not await may_grant(session, by, unit, row.role):
        raise Refusal("roles/not_yours", unit=unit, role=row.role.value)
    _end(row, at, by)
    await session.commit()
    return row, member, unit


def _end(grant_row: RoleGrant, at: datetime, by: Member | None) -> None:
    grant_row.revoked_at = at
    grant_row.revoked_by_member_id = by.id if by else None


async def end_roles_at(
    session: AsyncSession, unit: Unit, at: datetime, by: Member | None = None
) -> list[tuple[RoleGrant, Member]]:
    """A new executive committee: every role held AT this unit ends (not those below)."""
    rows = (
        await session.exec(
            select(RoleGrant, Member)
            .join(Member, col(Member.id) == RoleGrant.member_id)
            .where(RoleGrant.unit_id == unit.id, col(RoleGrant.revoked_at).is_(None))
            .order_by(RoleGrant.id)
        )
    ).all()
    for grant_row, _ in rows:
        _end(grant_row, at, by)
        session.add(grant_row)
    await session.commit()
    return list(rows)


async def end_all_roles(
    session: AsyncSession, member: Member, at: datetime, by: Member | None = None
) -> list[RoleGrant]:
    """Every role the member holds ends (they left the union); no commit."""
    rows = (
        await session.exec(
            select(RoleGrant).where(
                RoleGrant.member_id == member.id, col(RoleGrant.revoked_at).is_(None)
            )
        )
    ).all()
    for grant_row in rows:
        _end(grant_row, at, by)
        session.add(grant_row)
    return list(rows)


async def revocable_by(
    session: AsyncSession, actor: Member, limit: int = 20
) -> list[tuple[RoleGrant, Member, Unit]]:
    """Roles in force that `actor` may revoke, in tree order (the first `limit`)."""
    tops = await units_for(session, actor, Action.grant_role)
    if not tops:
        return []
    rows = await session.exec(
        select(RoleGrant, Member, Unit)
        .join(Member, col(Member.id) == RoleGrant.member_id)
        .join(Unit, col(Unit.id) == RoleGrant.unit_id)
        .where(
            col(RoleGrant.revoked_at).is_(None),
            or_(*(col(Unit.path).startswith(top.path) for top in tops)),
        )
        .order_by(Unit.path, RoleGrant.id)
    )
    kept = []
    for grant_row, member, unit in rows.all():
        if grant_row.role == Role.leader and any(top.id == unit.id for top in tops):
            continue  # a leader role at the actor's own level is a peer's (or their own)
        kept.append((grant_row, member, unit))
        if len(kept) >= limit:
            break
    return kept


async def allowed_actions(session: AsyncSession, member: Member | None) -> set[Action]:
    """What the member's roles let them do somewhere (drives their command menu)."""
    if member is None:
        return set()
    if not await roles_of(session, member):
        return set()
    return {action for action in Action if await units_for(session, member, action)}
