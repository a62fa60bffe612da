"""Who in a unit's subtree still owes the pledge, by grassroots union (officers' /pending)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import exists, not_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Campaign, ChatIdentity, Deadline, Member, Pledge, PledgeStatus, Unit
from bot.services import campaigns
from bot.services import deadlines as deadline_rules
from bot.services.units import grassroots_among, in_subtree
from bot.text import given_name_sort_key


@dataclass
class PendingGroup:
    unit: Unit
    members: list[tuple[Member, bool]] = field(default_factory=list)  # (member, on the bot)


@dataclass
class PendingView:
    unit: Unit
    deadline: Deadline | None
    last_day: date | None
    passed: bool
    groups: list[PendingGroup]

    @property
    def total(self) -> int:
        return sum(len(g.members) for g in self.groups)


async def for_unit(session: AsyncSession, unit: Unit, today: date) -> PendingView | None:
    """None when no campaign is in force at the unit."""
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    if in_force is None:
        return None
    deadline = in_force.pledge_deadline
    pledged = exists().where(
        Pledge.member_id == Member.id,
        Pledge.status == PledgeStatus.submitted,
        Pledge.campaign_id == Campaign.id,
        Campaign.year == in_force.campaign.year,
    )
    on_bot = exists().where(
        ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)
    )
    rows = await session.exec(
        select(Member, Unit, on_bot)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .where(in_subtree(unit), col(Member.active).is_(True), not_(pledged))
    )
    units = {u.id: u for u in (await session.exec(select(Unit).where(in_subtree(unit)))).all()}
    groups: dict[int, PendingGroup] = {}
    for member, member_unit, reachable in rows.all():
        home = grassroots_among(member_unit, units)
        groups.setdefault(home.id, PendingGroup(home)).members.append((member, bool(reachable)))
    for group in groups.values():
        group.members.sort(key=lambda pair: given_name_sort_key(pair[0].full_name))
    last_day = deadline_rules.last_day(deadline) if deadline else None
    return PendingView(
        unit=unit,
        deadline=deadline,
        last_day=last_day,
        passed=last_day is not None and today > last_day,
        groups=sorted(groups.values(), key=lambda g: (-len(g.members), g.unit.name)),
    )
