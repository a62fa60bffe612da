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
    """Active members unit by unit (a unit before the units below it), each unit's by given
    name, the Vietnamese way. One streamed query: memory holds one unit's members at a time.
    """
    if year is None:
        year = await year_in_force(session, unit, at, tz)
    on_bot = exists().where(
        ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)
    )
    campaign_ids = list(
        (await session.exec(select(Campaign.id).where(Campaign.year == (year or -1)))).all()
    )
    pledged = and_(
        col(Pledge.member_id) == Member.id,
        Pledge.status == PledgeStatus.submitted,
        col(Pledge.campaign_id).in_(campaign_ids),
    )
    result = await session.stream(
        select(
            Unit.id,
            Unit.code,
            Unit.name,
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
        .join(Unit, col(Unit.id) == Member.unit_id)
        .outerjoin(Pledge, pledged)
        .where(in_subtree(unit), col(Member.active).is_(True))
        .order_by(Unit.path, Member.id)
        .execution_options(yield_per=5000)
    )
    group: dict[int, tuple[tuple[str, str], MemberRow]] = {}
    current = None
    async for partition in result.partitions():  # a row at a time costs a greenlet switch
        for row in partition:
            unit_id, unit_code, unit_name, member_id, name, key, code = row[:7]
            position, phone, bot, late, review, filed_at = row[7:]
            if unit_id != current:
                for _, member_row in sorted(group.values(), key=lambda pair: pair[0]):
                    yield member_row
                group, current = {}, unit_id
            status = _status(year, late, review, filed_at)
            if member_id in group and status != "approved":
                continue  # pledges in two campaigns of one year: an approved one stands
            # The stored search key is the name without diacritics and the given name is its
            # last word: sorting needs no per-name Unicode work.
            sort_key = (key.rsplit(" ", 1)[-1], key) if key else given_name_sort_key(name)
            group[member_id] = (
                sort_key,
                MemberRow(
                    unit_code=unit_code,
                    unit_name=unit_name,
                    full_name=name,
                    member_code=code,
                    position=position,
                    phone=_national(phone),
                    on_bot=bool(bot),
                    status=status,
                    filed=_local_day(filed_at, tz),
                ),
            )
    for _, member_row in sorted(group.values(), key=lambda pair: pair[0]):
        yield member_row


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
