"""The rows behind the member-list export: every active member of a unit's subtree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo

from sqlalchemy import and_, exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Campaign, ChatIdentity, Member, Pledge, PledgeStatus, ReviewDecision, Unit
from bot.services import campaigns
from bot.services.units import in_subtree
from bot.text import given_name_sort_key


@dataclass(frozen=True, slots=True)
class MemberRow:
    unit_code: str
    unit_name: str
    full_name: str
    member_code: str | None
    position: str | None
    phone: str | None  # national form, 0912345678: officers see their subtree's phones
    on_bot: bool
    status: str  # on_time | late | missing | approved | returned | none (no campaign in force)
    filed: date | None  # the local day the pledge was first filed


@dataclass
class MemberListing:
    unit: Unit
    year: int | None  # the campaign year in force at the unit
    rows: list[MemberRow] = field(default_factory=list)


async def year_in_force(session: AsyncSession, unit: Unit, at: datetime, tz: tzinfo) -> int | None:
    in_force = await campaigns.in_force_for_unit(session, unit, at.astimezone(tz).date())
    return in_force.campaign.year if in_force else None


async def member_rows(
    session: AsyncSession, unit: Unit, at: datetime, tz: tzinfo, year: int | None = None
) -> AsyncIterator[MemberRow]:
    """Active members unit by unit in tree order, each unit's by given name (the Vietnamese
    way); one query per unit, so memory stays at one unit's members."""
    if year is None:
        year = await year_in_force(session, unit, at, tz)
    units = list((await session.exec(select(Unit).where(in_subtree(unit)))).all())
    units.sort(key=lambda u: [int(part) for part in u.path.strip("/").split("/")])
    on_bot = exists().where(
        ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)
    )
    campaign_ids = list(
        (await session.exec(select(Campaign.id).where(Campaign.year == (year or -1)))).all()
    )
    # Joined directly (not through a subquery SQLite would rebuild for every unit), on the
    # pledge's member index.
    pledged = and_(
        col(Pledge.member_id) == Member.id,
        Pledge.status == PledgeStatus.submitted,
        col(Pledge.campaign_id).in_(campaign_ids),
    )
    for member_unit in units:
        result = await session.exec(
            select(
                Member.id,
                Member.full_name,
                Member.name_key,
                Member.member_code,
                Member.position,
                Member.phone,
                on_bot,
                Pledge.late,
                Pledge.review,
                Pledge.first_submitted_at,
            )
            .outerjoin(Pledge, pledged)
            .where(Member.unit_id == member_unit.id, col(Member.active).is_(True))
        )
        seen: dict[int, MemberRow] = {}
        keys: dict[int, tuple[str, str]] = {}
        for (
            member_id,
            name,
            key,
            code,
            position,
            phone,
            bot,
            late,
            review,
            filed_at,
        ) in result.all():
            status = _status(year, late, review, filed_at)
            if member_id in seen and seen[member_id].status != "approved":
                continue  # two campaigns of one year: the better status stands
            seen[member_id] = MemberRow(
                unit_code=member_unit.code,
                unit_name=member_unit.name,
                full_name=name,
                member_code=code,
                position=position,
                phone=_national(phone),
                on_bot=bool(bot),
                status=status,
                filed=_local_day(filed_at, tz),
            )
            # The stored search key is the name without diacritics: the given name is its
            # last word, so sorting needs no per-name Unicode work.
            keys[member_id] = (key.rsplit(" ", 1)[-1], key) if key else given_name_sort_key(name)
        for member_id in sorted(seen, key=keys.__getitem__):
            yield seen[member_id]


async def collect_member_rows(
    session: AsyncSession, unit: Unit, at: datetime, tz: tzinfo
) -> MemberListing:
    """All rows at once, for the .xlsx writer to run off the event loop."""
    year = await year_in_force(session, unit, at, tz)
    listing = MemberListing(unit=unit, year=year)
    listing.rows = [row async for row in member_rows(session, unit, at, tz, year)]
    return listing


def _status(
    year: int | None, late: bool | None, review: str | None, filed_at: datetime | None
) -> str:
    if year is None:
        return "none"
    if late is None:  # no submitted pledge for the year (outer join)
        return "missing"
    if review == ReviewDecision.approved:
        return "approved"
    if review == ReviewDecision.returned:
        return "returned"
    return "late" if late else "on_time"


def _local_day(moment: datetime | None, tz: tzinfo) -> date | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).date()


def _national(phone: str | None) -> str | None:
    if phone and phone.startswith("+84"):
        return "0" + phone[3:]
    return phone
