"""Test data built through the real services, as an admin would."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.context import Services
from bot.models import ChatIdentity, Invite, Member, Role, Unit
from bot.services import tallies
from bot.services.campaigns import apply_campaign
from bot.services.invites import create_invite
from bot.services.people import new_member
from bot.services.units import add_unit


@dataclass
class DemoUnion:
    province: Unit
    district: Unit
    school: Unit
    factory: Unit


async def make_union(session: AsyncSession, svc: Services) -> DemoUnion:
    province = await add_unit(session, "BT", "LĐLĐ tỉnh Bình Thuận")
    district = await add_unit(session, "PT", "LĐLĐ thành phố Phan Thiết", "BT")
    school = await add_unit(session, "SCH", "CĐCS Trường THPT Phan Thiết", "PT")
    factory = await add_unit(session, "FAC", "CĐCS Công ty May Phan Thiết", "PT")
    await apply_campaign(session, svc.catalog, "binh-thuan-2024", province, svc.clock.now())
    return DemoUnion(province, district, school, factory)


async def override_pledge_deadline(
    session: AsyncSession, svc: Services, unit: Unit, day: date
) -> None:
    """`unit` applies the province's 2024 campaign again with its own pledge deadline, as a
    lower union may (its subtree then follows that day)."""
    await apply_campaign(
        session, svc.catalog, "binh-thuan-2024", unit, svc.clock.now(), {"pledge": day}
    )


async def make_member(
    session: AsyncSession, svc: Services, unit: Unit, name: str, phone: str | None = None
) -> Member:
    member = new_member(unit, name, phone, svc.clock.now())
    session.add(member)
    await session.flush()
    await tallies.counted_new(session, member.id)
    await session.commit()
    return member


async def link(session: AsyncSession, svc: Services, member: Member, user_id: int) -> None:
    """A member already on the bot (joined and consented earlier)."""
    async with tallies.tracking(session, member.id):
        session.add(ChatIdentity(channel="telegram", external_user_id=str(user_id),
                                 chat_id=str(user_id), member_id=member.id,
                                 consent_at=svc.clock.now(), created_at=svc.clock.now()))
    await session.commit()


async def invite(
    session: AsyncSession, svc: Services, unit: Unit, role: Role = Role.member,
    max_uses: int | None = None, valid_days: int = 30,
) -> Invite:
    return await create_invite(session, unit, svc.clock.now(), role, max_uses, valid_days)


async def expire(session: AsyncSession, invite: Invite, svc: Services) -> None:
    invite.expires_at = svc.clock.now() - timedelta(minutes=1)
    session.add(invite)
    await session.commit()


async def count(session: AsyncSession, model) -> int:
    return len((await session.exec(select(model))).all())
