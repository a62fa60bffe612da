"""Importing a roster into a unit's subtree: plan (check every row), then apply all or nothing.

`plan()` matches each row to a member (by phone, else by member code inside the subtree),
to a sub-unit (by code, or by name under its parent; new ones are planned, not written),
and collects every bad row with its reason. `apply()` writes the plan in the caller's
transaction with bulk statements (a 100,000-row file is a few hundred round trips, not
hundreds of thousands), records what happened to each member, rebuilds the touched units'
counts and commits. Importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import readcache
from bot.models import Member, MemberEvent, MemberEventKind, Unit, UnitLevel
from bot.rosterfile import ParsedRoster, RosterRow, RowProblem, UnitRef
from bot.services import tallies
from bot.services.units import in_subtree
from bot.text import search_key

CHUNK = 2000
QUERY_CHUNK = 5000
YIELD_EVERY = 2000
_NEXT_LEVEL = {
    UnitLevel.confederation: UnitLevel.province,
    UnitLevel.province: UnitLevel.district,
    UnitLevel.district: UnitLevel.grassroots,
    UnitLevel.grassroots: UnitLevel.team,
    UnitLevel.team: UnitLevel.team,
}
# The member fields a roster column sets; phone and member code are never cleared by a blank.
_FIELDS = ("full_name", "phone", "member_code", "position", "birth_date", "gender", "email")
_KEYS = ("phone", "member_code")


@dataclass(eq=False)
class NewUnit:
    """A sub-unit the file names that does not exist yet; created when the plan is applied."""

    code: str
    name: str
    parent: Unit | NewUnit
    level: UnitLevel
    generated: bool = False  # the file gave only a name: the code is ours
    unit: Unit | None = None

    @property
    def depth(self) -> int:
        return self.parent.depth + 1 if isinstance(self.parent, NewUnit) else 0


@dataclass(slots=True)
class _Known:
    """An existing member as far as the import needs them."""

    id: int
    unit_id: int
    values: dict[str, Any]


@dataclass(slots=True)
class _Change:
    member_id: int
    row: RosterRow
    values: dict[str, Any]
    old_unit_id: int
    new_unit: Unit | NewUnit
    changed: tuple[str, ...]


@dataclass
class Plan:
    """What importing the file would do, and every bad row (nothing is written if any)."""

    unit: Unit
    rows: int = 0
    created: int = 0
    updated: int = 0
    transferred: int = 0
    unchanged: int = 0
    new_units: list[NewUnit] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    applied: bool = False
    _inserts: list[tuple[RosterRow, Unit | NewUnit]] = field(default_factory=list, repr=False)
    _changes: list[_Change] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


async def plan(session: AsyncSession, unit: Unit, parsed: ParsedRoster) -> Plan:
    """Check every row against the database; write nothing."""
    result = Plan(unit=unit, rows=len(parsed.rows) + len({p.row for p in parsed.problems}))
    problems = list(parsed.problems)
    resolver = await _UnitResolver.load(session, unit, parsed.rows)
    known_by_phone, known_by_code, elsewhere = await _members(session, unit, parsed.rows)
    claimed: dict[int, int] = {}  # member id -> the row that matched them
    for index, row in enumerate(parsed.rows):
        if index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)  # a big file in the chat must not stall the other chats
        if row.phone is not None and row.phone in elsewhere:
            problems.append(RowProblem(row.row, "phone_elsewhere", _national(row.phone)))
            continue
        known = known_by_phone.get(row.phone) if row.phone else None
        if known is None and row.member_code is not None:
            known = known_by_code.get(row.member_code)
        if known is not None:
            first = claimed.setdefault(known.id, row.row)
            if first != row.row:
                problems.append(RowProblem(row.row, "same_member", "", first))
                continue
        target, problem = resolver.resolve(row)
        if problem is not None:
            problems.append(problem)
            continue
        if known is None:
            result._inserts.append((row, target))
            continue
        if not parsed.has_units and isinstance(target, Unit) and target.id == unit.id:
            # The file says nothing about units: members keep theirs.
            target = resolver.by_id.get(known.unit_id, target)
        values = _values(row, parsed.fields, known.values)
        changed = tuple(name for name in _FIELDS if values[name] != known.values[name])
        moved = not (isinstance(target, Unit) and target.id == known.unit_id)
        if changed or moved:
            result._changes.append(_Change(known.id, row, values, known.unit_id, target, changed))
        else:
            result.unchanged += 1
    await resolver.settle(session)
    result.problems = sorted(problems, key=lambda p: (p.row, p.reason))
    result.new_units = resolver.created
    result.created = len(result._inserts)
    result.updated = sum(1 for change in result._changes if change.changed)
    result.transferred = sum(
        1
        for change in result._changes
        if not (isinstance(change.new_unit, Unit) and change.new_unit.id == change.old_unit_id)
    )
    return result


async def apply(
    session: AsyncSession, planned: Plan, at: datetime, by_member_id: int | None = None
) -> Plan:
    """Write a clean plan in one transaction: units, members, events, counts; then commit."""
    if not planned.ok:
        raise ValueError("a plan with bad rows is never applied")
    await _create_units(session, planned.new_units)
    # Core statements below pass the ORM's hooks: forget cached persons at the commit.
    readcache.people_changed(session.sync_session)
    conn = await session.connection()
    touched: set[int] = set()
    table = Member.__table__
    events: list[dict[str, Any]] = []
    inserts = planned._inserts
    new_ids = await _allocate_ids(session, len(inserts))
    for start in range(0, len(inserts), CHUNK):
        chunk = inserts[start : start + CHUNK]
        params = []
        for member_id, (row, target) in zip(new_ids[start:], chunk, strict=False):
            unit_id = _unit_id(target)
            touched.add(unit_id)
            params.append(
                {
                    "id": member_id,
                    "unit_id": unit_id,
                    "full_name": row.full_name,
                    "name_key": search_key(row.full_name),
                    "phone": row.phone,
                    "member_code": row.member_code,
                    "position": row.position,
                    "birth_date": row.birth_date,
                    "gender": row.gender,
                    "email": row.email,
                    "active": True,
                    "created_at": at,
                    "updated_at": at,
                }
            )
        await conn.execute(insert(table), params)
        for param in params:
            events.append(_event(param["id"], MemberEventKind.imported, at, by_member_id,
                                 to_unit_id=param["unit_id"]))  # fmt: skip
    changes = planned._changes
    statement = (
        update(table)
        .where(table.c.id == bindparam("member_id"))
        .values(
            unit_id=bindparam("unit_id"),
            full_name=bindparam("full_name"),
            name_key=bindparam("name_key"),
            phone=bindparam("phone"),
            member_code=bindparam("member_code"),
            position=bindparam("position"),
            birth_date=bindparam("birth_date"),
            gender=bindparam("gender"),
            email=bindparam("email"),
            updated_at=bindparam("updated_at"),
        )
    )
    for start in range(0, len(changes), CHUNK):
        params = []
        for change in changes[start : start + CHUNK]:
            unit_id = _unit_id(change.new_unit)
            values = change.values
            params.append(
                {
                    **values,
                    "member_id": change.member_id,
                    "unit_id": unit_id,
                    "name_key": search_key(values["full_name"]),
                    "updated_at": at,
                }
            )
            if unit_id != change.old_unit_id:
                touched.update((unit_id, change.old_unit_id))
                events.append(_event(change.member_id, MemberEventKind.transferred, at,
                                     by_member_id, change.old_unit_id, unit_id))  # fmt: skip
            if change.changed:
                events.append(_event(change.member_id, MemberEventKind.updated, at, by_member_id,
                                     note=", ".join(change.changed)))  # fmt: skip
        await conn.execute(statement, params)
    event_table = MemberEvent.__table__
    for start in range(0, len(events), CHUNK * 5):
        await conn.execute(insert(event_table), events[start : start + CHUNK * 5])
    await tallies.recount(session, touched)
    await session.commit()
    planned.applied = True
    return planned


async def import_roster(
    session: AsyncSession,
    unit: Unit,
    parsed: ParsedRoster,
    at: datetime,
    by_member_id: int | None = None,
    dry_run: bool = False,
) -> Plan:
    """Plan and, when every row is good and it is not a dry run, apply in one transaction."""
    planned = await plan(session, unit, parsed)
    if planned.ok and not dry_run:
        return await apply(session, planned, at, by_member_id)
    await session.commit()  # ends the read: plan() never adds anything to the session
    return planned


async def _allocate_ids(session: AsyncSession, count: int) -> list[int]:
    """Ids for `count` new members, so one executemany inserts them all.

    INSERT … RETURNING in the order of the rows runs row by row on SQLite (its RETURNING
    order is not guaranteed), a round trip per member. PostgreSQL hands out a block from
    the id sequence; SQLite's transaction holds the write lock from BEGIN IMMEDIATE, so the
    ids above the highest are ours.
    """
    if count == 0:
        return []
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('member', 'id')) "
                "FROM generate_series(1, :count)"
            ),
            {"count": count},
        )
        return [int(value) for (value,) in rows.all()]
    top = (await conn.execute(select(func.max(Member.id)))).scalar() or 0
    return list(range(top + 1, top + 1 + count))


def _event(
    member_id: int,
    kind: MemberEventKind,
    at: datetime,
    by_member_id: int | None,
    from_unit_id: int | None = None,
    to_unit_id: int | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "kind": kind,
        "from_unit_id": from_unit_id,
        "to_unit_id": to_unit_id,
        "by_member_id": by_member_id,
        "note": note[:255] if note else None,
        "at": at,
    }


def _values(row: RosterRow, fields: frozenset[str], old: dict[str, Any]) -> dict[str, Any]:
    """The member's fields after the row: a column the file lacks keeps the old value."""
    values = dict(old)
    for name in _FIELDS:
        new = getattr(row, name)
        if name in fields and (new is not None or name not in _KEYS):
            values[name] = new
    values["full_name"] = row.full_name
    return values


def _national(phone: str) -> str:
    return "0" + phone[3:] if phone.startswith("+84") else phone


def _unit_id(target: Unit | NewUnit) -> int:
    unit = target.unit if isinstance(target, NewUnit) else target
    assert unit is not None and unit.id is not None
    return unit.id


async def _members(
    session: AsyncSession, unit: Unit, rows: list[RosterRow]
) -> tuple[dict[str, _Known], dict[str, _Known], set[str]]:
    """The subtree's members by phone and by member code, and the file's phones that belong
    to members elsewhere in the union."""
    columns = [getattr(Member, name) for name in _FIELDS]
    result = await session.exec(
        select(Member.id, Member.unit_id, *columns)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .where(in_subtree(unit))
        .order_by(col(Member.id))
    )
    by_phone: dict[str, _Known] = {}
    by_code: dict[str, _Known] = {}
    for member_id, unit_id, *values in result.all():
        known = _Known(member_id, unit_id, dict(zip(_FIELDS, values, strict=True)))
        if known.values["phone"]:
            by_phone[known.values["phone"]] = known
        if known.values["member_code"]:
            by_code.setdefault(known.values["member_code"], known)
    outside = sorted({row.phone for row in rows if row.phone and row.phone not in by_phone})
    elsewhere: set[str] = set()
    for start in range(0, len(outside), QUERY_CHUNK):
        found = await session.exec(
            select(Member.phone).where(col(Member.phone).in_(outside[start : start + QUERY_CHUNK]))
        )
        elsewhere.update(phone for phone in found.all() if phone)
    return by_phone, by_code, elsewhere


class _UnitResolver:
    """Matches the sub-unit columns of each row to units under the importing unit."""

    def __init__(self, top: Unit, units: list[Unit], codes_elsewhere: set[str]) -> None:
        self.top = top
        self.by_id = {u.id: u for u in units}
        self.by_code = {u.code: u for u in units}
        self.by_name: dict[tuple[int | NewUnit, str], Unit | NewUnit] = {}
        for u in units:
            if u.parent_id is not None:
                self.by_name.setdefault((u.parent_id, search_key(u.name)), u)
        self.new_by_code: dict[str, NewUnit] = {}
        self.codes_elsewhere = codes_elsewhere
        self.created: list[NewUnit] = []
        self._cache: dict[tuple[UnitRef, ...], tuple[Unit | NewUnit | None, str]] = {}
        self._taken = set(self.by_code) | codes_elsewhere

    @classmethod
    async def load(cls, session: AsyncSession, top: Unit, rows: list[RosterRow]) -> _UnitResolver:
        units = list((await session.exec(select(Unit).where(in_subtree(top)))).all())
        inside = {u.code for u in units}
        named = sorted({r.code for row in rows for r in row.units if r.code} - inside)
        elsewhere: set[str] = set()
        for start in range(0, len(named), QUERY_CHUNK):
            found = await session.exec(
                select(Unit.code).where(col(Unit.code).in_(named[start : start + QUERY_CHUNK]))
            )
            elsewhere.update(found.all())
        return cls(top, units, elsewhere)

    async def settle(self, session: AsyncSession) -> None:
        """Give a new code to any generated one that some unit elsewhere already uses."""
        while True:
            codes = [new.code for new in self.created if new.generated]
            clash: set[str] = set()
            for start in range(0, len(codes), QUERY_CHUNK):
                found = await session.exec(
                    select(Unit.code).where(col(Unit.code).in_(codes[start : start + QUERY_CHUNK]))
                )
                clash.update(found.all())
            if not clash:
                return
            self._taken |= clash
            for new in self.created:
                if new.generated and new.code in clash:
                    del self.new_by_code[new.code]
                    new.code = self._code_for(new.parent, new.name)
                    self.new_by_code[new.code] = new

    def resolve(self, row: RosterRow) -> tuple[Unit | NewUnit, RowProblem | None]:
        cached = self._cache.get(row.units)
        if cached is None:
            cached = self._walk(row.units)
            self._cache[row.units] = cached
        target, reason = cached
        if target is None:
            return self.top, RowProblem(row.row, "unit_outside", reason)
        return target, None

    def _walk(self, refs: tuple[UnitRef, ...]) -> tuple[Unit | NewUnit | None, str]:
        parent: Unit | NewUnit = self.top
        for ref in refs:
            if ref.code is not None:
                found = self.by_code.get(ref.code) or self.new_by_code.get(ref.code)
                if found is None and ref.code in self.codes_elsewhere:
                    return None, ref.code
                if found is None:
                    found = self._new(ref.code, ref.name or ref.code, parent)
                elif not _within(found, parent):
                    return None, ref.code
            else:
                assert ref.name is not None
                key = (parent if isinstance(parent, NewUnit) else parent.id, search_key(ref.name))
                found = self.by_name.get(key)
                if found is None:
                    found = self._new(self._code_for(parent, ref.name), ref.name, parent)
                    found.generated = True
                    self.by_name[key] = found
            parent = found
        return parent, ""

    def _new(self, code: str, name: str, parent: Unit | NewUnit) -> NewUnit:
        unit = NewUnit(code=code, name=name, parent=parent, level=_NEXT_LEVEL[parent.level])
        self._taken.add(code)
        self.new_by_code[code] = unit
        self.created.append(unit)
        return unit

    def _code_for(self, parent: Unit | NewUnit, name: str) -> str:
        """SCH + "Tổ Giáo viên" -> SCH-TO-GIAO-VIEN (a number added if that is taken)."""
        slug = re.sub(r"[^A-Z0-9]+", "-", search_key(name).upper()).strip("-")[:24] or "DV"
        base = f"{parent.code[:36]}-{slug}"
        code, n = base, 1
        while code in self._taken:
            n += 1
            code = f"{base}-{n}"
        return code


def _within(unit: Unit | NewUnit, parent: Unit | NewUnit) -> bool:
    """`unit` lies at or under `parent` (a unit not yet created counts through its parents)."""
    node: Unit | NewUnit = unit
    while isinstance(node, NewUnit):
        if node is parent:
            return True
        node = node.parent
    return isinstance(parent, Unit) and node.path.startswith(parent.path)


async def _create_units(session: AsyncSession, new_units: list[NewUnit]) -> None:
    """Create planned units level by level: two flushes a level, not two per unit."""
    by_depth: dict[int, list[NewUnit]] = {}
    for new in new_units:
        by_depth.setdefault(new.depth, []).append(new)
    for depth in sorted(by_depth):
        level = by_depth[depth]
        for new in level:
            parent = new.parent.unit if isinstance(new.parent, NewUnit) else new.parent
            assert parent is not None
            new.unit = Unit(
                code=new.code,
                name=new.name,
                level=new.level,
                parent_id=parent.id,
                depth=parent.depth + 1,
            )
            session.add(new.unit)
        await session.flush()
        for new in level:
            parent = new.parent.unit if isinstance(new.parent, NewUnit) else new.parent
            assert parent is not None and new.unit is not None
            new.unit.path = f"{parent.path}{new.unit.id}/"
        await session.flush()
