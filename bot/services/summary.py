"""The one summary of a unit's subtree: `/summary`, digests, exports and reports all call it.

It reads the stored per-unit counts (bot/services/tallies.py), one row per unit in scope, so
a province's summary costs the same with a hundred or a million members.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo

from sqlalchemy import and_, case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ReportKind, Unit, UnitLevel, UnitPledgeTally, UnitTally
from bot.services import campaigns
from bot.services.units import ancestor_ids, in_subtree


@dataclass
class Figures:
    """Counts for one unit's subtree (or one child's)."""

    unit: Unit
    members: int = 0  # everyone on the roster, active or not
    active: int = 0
    on_bot: int = 0  # active members linked to a chat identity that has not blocked the bot
    on_time: int = 0
    late: int = 0
    approved: int = 0  # submitted pledges whose latest review approved them

    @property
    def pledged(self) -> int:
        return self.on_time + self.late

    @property
    def missing(self) -> int:
        return self.active - self.pledged

    @property
    def pledged_share(self) -> float:
        return self.pledged / self.active if self.active else 1.0

    @property
    def pledged_percent(self) -> int:
        """The pledged share as a whole percentage, rounded down (100 only when all did)."""
        return self.pledged * 100 // self.active if self.active else 100

    def add(self, other: Figures) -> None:
        self.members += other.members
        self.active += other.active
        self.on_bot += other.on_bot
        self.on_time += other.on_time
        self.late += other.late
        self.approved += other.approved


@dataclass
class UnitSummary:
    total: Figures
    year: int | None
    next_deadline: campaigns.Upcoming | None  # with its last day and the days left
    children: list[Figures] = field(default_factory=list)  # lowest pledged share first


async def for_unit(session: AsyncSession, unit_id: int, at: datetime, tz: tzinfo) -> UnitSummary:
    """Members, active, on the bot, pledges on time / late / missing / approved, per child too.

    A pledge counts when it is submitted for a campaign of the year in force at the unit
    (a lower unit that set its own campaign that year files into its own campaign row).
    """
    unit = await session.get(Unit, unit_id)
    assert unit is not None
    today = at.astimezone(tz).date()
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    year = in_force.campaign.year if in_force else None
    # Each unit in the subtree is summed into the child it lies under, in SQL: the child's
    # id is the path component after the unit's own path ("" for the unit itself), so the
    # database reads one tally row per unit and returns one row per child.
    below = func.substr(Unit.path, len(unit.path) + 1)
    find = func.strpos if _dialect(session) == "postgresql" else func.instr
    child_key = case(
        (Unit.id == unit.id, ""),
        else_=func.substr(Unit.path, len(unit.path) + 1, find(below, "/") - 1),
    ).label("child")
    counts = [
        func.sum(column)
        for column in (
            UnitTally.members,
            UnitTally.active,
            UnitTally.on_bot,
            UnitPledgeTally.on_time,
            UnitPledgeTally.late,
            UnitPledgeTally.approved,
        )
    ]
    rows = await session.exec(
        select(child_key, *counts)
        .join(UnitTally, col(UnitTally.unit_id) == Unit.id)
        .outerjoin(
            UnitPledgeTally,
            and_(col(UnitPledgeTally.unit_id) == Unit.id, UnitPledgeTally.year == (year or -1)),
        )
        .where(in_subtree(unit))
        .group_by(child_key)
    )
    children = (await session.exec(select(Unit).where(Unit.parent_id == unit.id))).all()
    by_child = {str(child.id): Figures(child) for child in children}
    total = Figures(unit)
    for key, *values in rows.all():
        figures = Figures(unit, *(int(value or 0) for value in values))
        total.add(figures)
        child = by_child.get(key)
        if child is not None:
            child.add(figures)
    ahead = campaigns.upcoming(in_force, today) if in_force else []
    return UnitSummary(
        total=total,
        year=year,
        next_deadline=ahead[0] if ahead else None,
        children=sorted(by_child.values(), key=lambda f: (f.pledged_share, f.unit.name)),
    )


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


# -- the report draft ------------------------------------------------------------------------

BEHIND_NOTED = 3  # units named in the draft's "shortcomings" section
_PLACE = re.compile(r"(?:tỉnh|thành phố|TP\.?|quận|huyện|thị xã)\s+(.+)$", re.IGNORECASE)


@dataclass
class ReportFacts:
    """What the six-month / annual report draft says, all read before the file is built."""

    unit: Unit
    parent: Unit | None
    summary: UnitSummary
    kind: ReportKind
    year: int
    today: date
    place: str  # "Bình Thuận": the province (or the top unit) the report is written in
    topic: str | None  # the year's topic in force, in Vietnamese and English
    topic_en: str | None
    behind: list[Figures]  # child units furthest behind that still miss pledges


async def report_facts(
    session: AsyncSession, unit: Unit, kind: ReportKind, at: datetime, tz: tzinfo
) -> ReportFacts:
    """The figures "tính đến ngày" today and the names the draft's header needs."""
    figures = await for_unit(session, unit.id, at, tz)
    today = at.astimezone(tz).date()
    chain = {
        u.id: u
        for u in (
            await session.exec(select(Unit).where(col(Unit.id).in_(ancestor_ids(unit))))
        ).all()
    }
    ancestors = [chain[i] for i in reversed(ancestor_ids(unit))]  # top first
    top = next((u for u in ancestors if u.level == UnitLevel.province), ancestors[0])
    match = _PLACE.search(top.name)
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    return ReportFacts(
        unit=unit,
        parent=chain.get(unit.parent_id) if unit.parent_id else None,
        summary=figures,
        kind=kind,
        year=figures.year or today.year,
        today=today,
        place=match.group(1) if match else "……",
        topic=in_force.campaign.topic if in_force else None,
        topic_en=in_force.campaign.topic_en if in_force else None,
        behind=[child for child in figures.children if child.missing > 0][:BEHIND_NOTED],
    )
