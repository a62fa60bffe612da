"""Six-month and annual reports a unit sends up the tree: the bot's draft or a signed file.

A leader (Action.send_report at the unit) sends their unit's report for a year; the leaders
above see which sub-units have sent theirs and open what was sent. Once a unit has sent a
report, the reminders of the matching unit deadline stop for it (bot/services/reminders.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Member, ReportKind, Unit, UnitReport
from bot.services import chat_state
from bot.services.authorization import Action, may
from bot.services.errors import Refusal
from bot.services.people import Person

FLOW_UPLOAD = "report_upload"
# The unit deadlines (content/campaigns/*.yaml, campaigns.KNOWN_DEADLINE_KINDS) a report meets.
DEADLINE_KINDS = {"six_month_report": ReportKind.six_month, "annual_report": ReportKind.annual}
KIND_CODES = {"s": ReportKind.six_month, "a": ReportKind.annual}
CODE_OF_KIND = {kind: code for code, kind in KIND_CODES.items()}
# A signed scan or the edited draft: what a leader can reasonably send up.
UPLOAD_SUFFIXES = frozenset({".pdf", ".doc", ".docx", ".odt", ".jpg", ".jpeg", ".png"})
KEEP_BYTES_UP_TO = 2 * 1024 * 1024  # larger uploads are kept by Telegram's file_id only


@dataclass(frozen=True)
class ChildReport:
    unit: Unit
    report: UnitReport | None  # the latest sent, None: not sent yet


async def require(session: AsyncSession, member: Member | None, action: Action, unit_id: int):
    """The unit, if `member` may do `action` there; a refusal otherwise (unknown ids too)."""
    unit = await session.get(Unit, unit_id)
    if unit is None or not await may(session, member, action, unit):
        raise Refusal("summary/not_yours")
    return unit


async def latest(
    session: AsyncSession, unit_ids: list[int], year: int, kind: ReportKind
) -> dict[int, UnitReport]:
    """The latest report of each unit that sent one for (year, kind)."""
    if not unit_ids:
        return {}
    newest = (
        select(func.max(UnitReport.id))
        .where(
            col(UnitReport.unit_id).in_(unit_ids),
            UnitReport.year == year,
            UnitReport.kind == kind,
        )
        .group_by(UnitReport.unit_id)
    )
    rows = await session.exec(select(UnitReport).where(col(UnitReport.id).in_(newest)))
    return {report.unit_id: report for report in rows.all()}


async def children_status(
    session: AsyncSession, unit: Unit, year: int, kind: ReportKind
) -> list[ChildReport]:
    """Each child unit and what it sent: the ones still owing first, then by name."""
    children = (await session.exec(select(Unit).where(Unit.parent_id == unit.id))).all()
    sent = await latest(session, [child.id for child in children], year, kind)
    rows = [ChildReport(child, sent.get(child.id)) for child in children]
    return sorted(rows, key=lambda row: (row.report is not None, row.unit.name))


async def send_generated(
    session: AsyncSession,
    member: Member,
    unit: Unit,
    year: int,
    kind: ReportKind,
    filename: str,
    content: bytes,
    at: datetime,
) -> UnitReport:
    """Send the bot's draft up as the unit's report (the caller built it from the summary)."""
    if not await may(session, member, Action.send_report, unit):
        raise Refusal("summary/not_yours")
    report = UnitReport(
        unit_id=unit.id,
        year=year,
        kind=kind,
        generated=True,
        filename=filename,
        content=content,
        sent_by_member_id=member.id,
        sent_at=at,
    )
    session.add(report)
    await session.commit()
    return report


async def start_upload(
    session: AsyncSession, person: Person, unit: Unit, year: int, kind: ReportKind, at: datetime
) -> None:
    """The leader chose to upload a signed file: the next document they send is the report."""
    if not await may(session, person.member, Action.send_report, unit):
        raise Refusal("summary/not_yours")
    state = await chat_state.get_state(session, person.identity.id)
    chat_state.put_state(
        session,
        state,
        person.identity.id,
        FLOW_UPLOAD,
        0,
        {"unit_id": unit.id, "year": year, "kind": kind.value},
        at,
    )
    await session.commit()


async def awaiting_upload(session: AsyncSession, person: Person) -> bool:
    state = await chat_state.get_state(session, person.identity.id)
    return state is not None and state.flow == FLOW_UPLOAD


def check_upload(filename: str | None) -> str:
    """The file's name if it is a kind of file a report can be; a refusal otherwise."""
    name = PurePath(filename or "").name
    if PurePath(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise Refusal("summary/upload_bad_type", filename=name or "?")
    return name


async def receive_upload(
    session: AsyncSession,
    person: Person,
    filename: str | None,
    file_id: str,
    content: bytes | None,
    at: datetime,
) -> tuple[UnitReport, Unit]:
    """The signed file arrived: record it as the unit's report (authorization re-checked)."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW_UPLOAD:
        raise Refusal("summary/upload_not_expected")
    name = check_upload(filename)
    unit = await require(session, person.member, Action.send_report, state.data["unit_id"])
    assert person.member is not None
    report = UnitReport(
        unit_id=unit.id,
        year=int(state.data["year"]),
        kind=ReportKind(state.data["kind"]),
        generated=False,
        filename=name,
        content=content if content is not None and len(content) <= KEEP_BYTES_UP_TO else None,
        file_id=file_id,
        sent_by_member_id=person.member.id,
        sent_at=at,
    )
    session.add(report)
    await chat_state.clear_state(session, state)
    await session.commit()
    return report, unit


async def open_report(session: AsyncSession, member: Member | None, report_id: int) -> UnitReport:
    """A sent report, for whoever may see the summary of its unit (its leaders and above)."""
    report = await session.get(UnitReport, report_id)
    if report is None:
        raise Refusal("summary/not_yours")
    await require(session, member, Action.view_summary, report.unit_id)
    return report


async def sent_units(
    session: AsyncSession, unit_ids: list[int], year: int, kind: ReportKind
) -> set[int]:
    """Of these units, the ones that sent their report for (year, kind)."""
    if not unit_ids:
        return set()
    rows = await session.exec(
        select(UnitReport.unit_id)
        .where(
            col(UnitReport.unit_id).in_(unit_ids),
            UnitReport.year == year,
            UnitReport.kind == kind,
        )
        .distinct()
    )
    return set(rows.all())
