"""Member lists with their status as .xlsx (a minimal version; the roster work extends it).

The rows are read first, in the caller's transaction; the workbook is built in a worker
thread, so a big export never stalls the bot.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import datetime, tzinfo

from openpyxl import Workbook
from sqlalchemy import exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Campaign, ChatIdentity, Member, Pledge, PledgeStatus, ReviewDecision, Unit
from bot.services import campaigns
from bot.services.units import in_subtree
from bot.text import given_name_sort_key

# Column titles and status words: Vietnamese by default; the handler passes the user's own
# from the summary/xlsx template.
DEFAULT_HEADERS = ["Đơn vị", "Họ và tên", "Chức vụ", "Dùng bot", "Bản đăng ký"]
DEFAULT_STATUS = {
    "yes": "Có",
    "no": "Chưa",
    "on_time": "Đúng hạn",
    "late": "Trễ hạn",
    "approved": "Đã duyệt",
    "missing": "Chưa nộp",
}


@dataclass(frozen=True)
class MemberRow:
    unit: str
    full_name: str
    position: str
    on_bot: bool
    status: str  # on_time | late | approved | missing


async def member_rows(
    session: AsyncSession, unit: Unit, at: datetime, tz: tzinfo
) -> list[MemberRow]:
    """Every active member in the unit's subtree with their pledge status this year."""
    in_force = await campaigns.in_force_for_unit(session, unit, at.astimezone(tz).date())
    year = in_force.campaign.year if in_force else -1
    on_bot = exists().where(
        ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)
    )
    pledged = (
        select(Pledge.member_id, Pledge.late, Pledge.review)
        .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
        .where(Pledge.status == PledgeStatus.submitted, Campaign.year == year)
        .subquery()
    )
    rows = await session.exec(
        select(
            Unit.name, Member.full_name, Member.position, on_bot, pledged.c.late, pledged.c.review
        )
        .join(Unit, col(Unit.id) == Member.unit_id)
        .outerjoin(pledged, pledged.c.member_id == Member.id)
        .where(in_subtree(unit), col(Member.active).is_(True))
    )
    result = []
    for unit_name, name, position, bot, late, review in rows.all():
        if late is None:
            status = "missing"
        elif review == ReviewDecision.approved:
            status = "approved"
        else:
            status = "late" if late else "on_time"
        result.append(MemberRow(unit_name, name, position or "", bool(bot), status))
    result.sort(key=lambda row: (row.unit, given_name_sort_key(row.full_name)))
    return result


def build_members_xlsx(
    rows: list[MemberRow], headers: list[str], status: dict[str, str], title: str
) -> bytes:
    """The workbook bytes (pure: runs in a worker thread)."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title[:31] or "Sheet1")
    sheet.append(headers)
    for row in rows:
        sheet.append(
            [
                row.unit,
                row.full_name,
                row.position,
                status["yes" if row.on_bot else "no"],
                status[row.status],
            ]
        )
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


async def members_xlsx_bytes(
    session: AsyncSession,
    unit: Unit,
    at: datetime,
    tz: tzinfo,
    headers: list[str] | None = None,
    status: dict[str, str] | None = None,
) -> bytes:
    """The .xlsx of every member in the unit's subtree with their status."""
    rows = await member_rows(session, unit, at, tz)
    return await asyncio.to_thread(
        build_members_xlsx, rows, headers or DEFAULT_HEADERS, status or DEFAULT_STATUS, unit.code
    )
