"""The one summary of a unit's subtree: `/summary`, digests, exports and reports all call it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sqlalchemy import and_, case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Campaign, ChatIdentity, Member, Pledge, PledgeStatus, Unit
from bot.services import campaigns
from bot.services.units import in_subtree


@dataclass
class Figures:
    """Counts for one unit's subtree (or one child's)."""

    unit: Unit
    members: int = 0  # everyone on the roster, active or not
    active: int = 0
    on_bot: int = 0  # active members linked to a chat identity that has not blocked the bot
    on_time: int = 0
    late: int = 0

    @property
    def pledged(self) -> int:
        return self.on_time + self.late

    @property
    def missing(self) -> int:
        return self.active - self.pledged

    @property
    def pledged_share(self) -> float:
        return self.pledged / self.active if self.active else 1.0

    def add(self, other: Figures) -> None:
        self.members += other.members
        self.active += other.active
        self.on_bot += other.on_bot
        self.on_time += other.on_time
        self.late += other.late


@dataclass
class UnitSummary:
    total: Figures
    year: int | None
    next_deadline: campaigns.Upcoming | None  # with its last day and the days left
    children: list[Figures] = field(default_factory=list)  # lowest pledged share first


async def for_unit(session: AsyncSession, unit_id: int, at: datetime, tz: tzinfo) -> UnitSummary:
    """Members, active, on the bot, pledges on time / late / missing, per child unit too.

    A pledge counts when it is submitted for a campaign of the year in force at the unit
    (a lower unit that set its own campaign that year files into its own campaign row).
    """
    unit = await session.get(Unit, unit_id)
    assert unit is not None
    today = at.astimezone(tz).date()
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    year = in_force.campaign.year if in_force else None

    on_bot = (
        select(ChatIdentity.member_id)
        .where(col(ChatIdentity.blocked_at).is_(None), col(ChatIdentity.member_id).is_not(None))
        .scalar_subquery()
    )
    pledged = (
        select(Pledge.member_id, Pledge.late)
        .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
        .where(Pledge.status == PledgeStatus.submitted, Campaign.year == (year or -1))
        .subquery()
    )
    active = col(Member.active).is_(True)
    rows = await session.exec(
        select(
            Unit.path,
            func.count(Member.id),
            func.sum(case((active, 1), else_=0)),
            func.sum(case((and_(active, col(Member.id).in_(on_bot)), 1), else_=0)),
            func.sum(
                case(
                    (and_(active, pledged.c.member_id.is_not(None), pledged.c.late.is_(False)), 1),
                    else_=0,
                )
            ),
            func.sum(case((and_(active, pledged.c.late.is_(True)), 1), else_=0)),
        )
        .join(Member, col(Member.unit_id) == Unit.id)
        .outerjoin(pledged, pledged.c.member_id == Member.id)
        .where(in_subtree(unit))
        .group_by(Unit.path)
    )
    children = (await session.exec(select(Unit).where(Unit.parent_id == unit.id))).all()
    by_child = {child.path: Figures(child) for child in children}
    total = Figures(unit)
    for path, members, n_active, n_bot, n_on_time, n_late in rows.all():
        figures = Figures(
            unit, members or 0, n_active or 0, n_bot or 0, n_on_time or 0, n_late or 0
        )
        total.add(figures)
        for child_path, child_figures in by_child.items():
            if path.startswith(child_path):
                child_figures.add(figures)
                break
    ahead = campaigns.upcoming(in_force, today) if in_force else []
    return UnitSummary(
        total=total,
        year=year,
        next_deadline=ahead[0] if ahead else None,
        children=sorted(by_child.values(), key=lambda f: (f.pledged_share, f.unit.name)),
    )
