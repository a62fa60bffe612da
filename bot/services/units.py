"""The union tree: adding units and asking for subtrees and ancestors."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Unit, UnitLevel
from bot.services.errors import Refusal
from bot.text import clean_name

_NEXT_LEVEL = {
    UnitLevel.confederation: UnitLevel.province,
    UnitLevel.province: UnitLevel.district,
    UnitLevel.district: UnitLevel.grassroots,
    UnitLevel.grassroots: UnitLevel.team,
    UnitLevel.team: UnitLevel.team,
}


async def add_unit(
    session: AsyncSession,
    code: str,
    name: str,
    parent_code: str | None = None,
    level: UnitLevel | None = None,
) -> Unit:
    """Create a unit under `parent_code`; its level defaults to one below the parent's."""
    code = code.strip()
    if not code or len(code) > 64:
        raise Refusal("cli/unit_bad_code", code=code)
    if await get_unit(session, code) is not None:
        raise Refusal("cli/unit_exists", code=code)
    parent = None
    if parent_code:
        parent = await get_unit(session, parent_code)
        if parent is None:
            raise Refusal("cli/unit_unknown", code=parent_code)
    if level is None:
        level = _NEXT_LEVEL[parent.level] if parent else UnitLevel.province
    unit = Unit(
        code=code,
        name=clean_name(name),
        level=level,
        parent_id=parent.id if parent else None,
        depth=parent.depth + 1 if parent else 0,
    )
    session.add(unit)
    await session.flush()
    unit.path = f"{parent.path if parent else '/'}{unit.id}/"
    await session.commit()
    return unit


async def get_unit(session: AsyncSession, code: str) -> Unit | None:
    return (await session.exec(select(Unit).where(Unit.code == code.strip()))).first()


async def require_unit(session: AsyncSession, code: str) -> Unit:
    unit = await get_unit(session, code)
    if unit is None:
        raise Refusal("cli/unit_unknown", code=code)
    return unit


def in_subtree(unit: Unit) -> ColumnElement[bool]:
    """A WHERE clause for the unit and everything below it: one indexed prefix match."""
    return col(Unit.path).startswith(unit.path)


def ancestor_ids(unit: Unit) -> list[int]:
    """The unit's own id and its ancestors', nearest first."""
    return [int(part) for part in reversed(unit.path.strip("/").split("/")) if part]


async def list_units(session: AsyncSession) -> list[Unit]:
    """All units in tree order (a parent before its children)."""
    units = (await session.exec(select(Unit))).all()
    return sorted(units, key=lambda unit: [int(p) for p in unit.path.strip("/").split("/")])


async def grassroots_of(session: AsyncSession, unit: Unit) -> Unit | None:
    """The CĐCS a unit belongs to (itself, or the nearest grassroots ancestor)."""
    ids = ancestor_ids(unit)
    rows = (await session.exec(select(Unit).where(col(Unit.id).in_(ids)))).all()
    by_id = {row.id: row for row in rows}
    for unit_id in ids:
        if by_id[unit_id].level == UnitLevel.grassroots:
            return by_id[unit_id]
    return None


def grassroots_among(unit: Unit, units: dict[int, Unit]) -> Unit:
    """The CĐCS `unit` belongs to, looked up in `units`: itself or its nearest grassroots
    ancestor; a unit with none above it (a district's own staff) stands for itself."""
    for unit_id in reversed([int(p) for p in unit.path.strip("/").split("/") if p]):
        candidate = units.get(unit_id)
        if candidate is not None and candidate.level == UnitLevel.grassroots:
            return candidate
    return unit
