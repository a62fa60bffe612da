"""A member's own pause on reminders (leave, sickness), up to a chosen day."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatIdentity, Member
from bot.services import tallies
from bot.services.errors import Refusal

MAX_MUTE_DAYS = 366


async def mute_until(session: AsyncSession, member: Member, until: date, today: date) -> date:
    """No reminders up to and including `until`; it must be today or later, within a year."""
    if until < today:
        raise Refusal("reminders/mute_past", until=until)
    if (until - today).days > MAX_MUTE_DAYS:
        raise Refusal("reminders/mute_too_far", limit=MAX_MUTE_DAYS)
    member.reminders_muted_until = until
    session.add(member)
    await session.commit()
    return until


async def unmute(session: AsyncSession, member: Member) -> None:
    member.reminders_muted_until = None
    session.add(member)
    await session.commit()


def is_muted(member: Member, today: date) -> bool:
    return member.reminders_muted_until is not None and member.reminders_muted_until >= today


async def set_blocked(
    session: AsyncSession, identity: ChatIdentity, blocked: bool, at: datetime
) -> None:
    """Telegram told us the person blocked (or unblocked) the bot."""
    member_ids = (identity.member_id,) if identity.member_id is not None else ()
    async with tallies.tracking(session, *member_ids):
        identity.blocked_at = at if blocked else None
        session.add(identity)
    await session.commit()


def parse_day(text: str, today: date) -> date | None:
    """'30/4', '30/4/2024' or '2024-04-30' as a date (a day without a year is the next one)."""
    text = text.strip()
    try:
        if "-" in text:
            return date.fromisoformat(text)
        parts = [int(p) for p in text.split("/")]
    except ValueError:
        return None
    try:
        if len(parts) == 3:
            return date(parts[2], parts[1], parts[0])
        if len(parts) == 2:
            day = date(today.year, parts[1], parts[0])
            return day if day >= today else date(today.year + 1, parts[1], parts[0])
    except ValueError:
        return None
    return None
