"""/summary for officers and leaders: figures, drill down, chart, Excel, report drafts and reports.

Buttons carry "sm:<what>:<unit id>[:<kind>]"; every press re-checks that the unit lies in
the person's own scope, so a forged button with another unit's id is refused.
"""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.ext import ContextTypes

from bot.models import ReportKind, Unit
from bot.services import exports, reports, summary
from bot.services.authorization import Action, may, units_for
from bot.services.errors import Refusal
from handlers import router
from handlers.common import Turn, answer_query, end_transaction, keyboard, send, show, turn

CHILD_LINES = 40  # child units listed in the message; the chart and the draft have them all
CHILD_BUTTONS = 6  # drill-down buttons: the units furthest behind


def _pairs(t: Turn, name: str, **ctx) -> dict[str, str]:
    """A `key: text` template (chart labels, captions) read as a dict."""
    return t.services.renderer.pairs(name, t.locale, **ctx)


async def _markup(t: Turn, unit: Unit, view: summary.UnitSummary):
    rows: list[list[tuple[str, str]]] = []
    drill = [
        (f"{t.label('sm_drill')} {child.unit.name}", f"sm:u:{child.unit.id}")
        for child in view.children[:CHILD_BUTTONS]
    ]
    rows += [drill[i : i + 2] for i in range(0, len(drill), 2)]
    u = unit.id
    rows.append([(t.label("sm_chart"), f"sm:c:{u}"), (t.label("sm_export"), f"sm:x:{u}")])
    rows.append([(t.label("sm_report_s"), f"sm:r:{u}:s"), (t.label("sm_report_a"), f"sm:r:{u}:a")])
    parent = await t.session.get(Unit, unit.parent_id) if unit.parent_id else None
    if parent is not None and await may(t.session, t.person.member, Action.view_summary, parent):
        rows.append([(t.label("sm_up"), f"sm:u:{parent.id}")])
    return keyboard(rows)


async def _show_unit(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, unit: Unit):
    clock = t.services.clock
    view = await summary.for_unit(t.session, unit.id, clock.now(), clock.tz)
    text = t.render("summary/view", s=view, today=clock.today(), limit=CHILD_LINES)
    await show(update, context, text, await _markup(t, unit, view))


async def summary_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/summary: the figures of the person's unit, or a choice when they look after several."""
    async with turn(update, context) as t:
        units = await units_for(t.session, t.person.member, Action.view_summary)
        if not units:
            await send(update, context, t.render("summary/not_allowed"))
        elif len(units) == 1:
            await _show_unit(update, context, t, units[0])
        else:
            buttons = [[(unit.name, f"sm:u:{unit.id}")] for unit in units]
            await send(update, context, t.render("summary/pick", units=units), keyboard(buttons))


def _parse(data: str) -> tuple[str, int, ReportKind | None] | None:
    parts = data.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit():
        return None
    kind = None
    if len(parts) == 4:
        kind = reports.KIND_CODES.get(parts[3])
        if kind is None:
            return None
    return parts[1], int(parts[2]), kind


_ACTIONS = {
    "u": Action.view_summary,
    "c": Action.view_summary,
    "x": Action.export,
    "r": Action.view_summary,
    "d": Action.view_summary,
    "g": Action.send_report,
    "f": Action.send_report,
}


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every "sm:" button; the unit is checked against the person's scope on each press."""
    query = update.callback_query
    assert query is not None and query.data is not None
    parsed = _parse(query.data)
    async with turn(update, context) as t:
        if parsed is None or parsed[0] not in (*_ACTIONS, "o"):
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        what, number, kind = parsed
        try:
            if what == "o":
                await _open_report(update, context, t, number)
                return
            unit = await reports.require(t.session, t.person.member, _ACTIONS[what], number)
            await _dispatch(update, context, t, what, unit, kind)
        except Refusal as refusal:
            await answer_query(update)
            await send(update, context, t.render(refusal.template, **refusal.context))


async def _dispatch(update, context, t: Turn, what: str, unit: Unit, kind: ReportKind | None):
    if what in ("r", "d", "g", "f") and kind is None:
        await answer_query(update, t.render("common/stale_button"), alert=True)
        return
    await answer_query(update)
    if what == "u":
        await _show_unit(update, context, t, unit)
    elif what == "c":
        await _chart(update, context, t, unit)
    elif what == "x":
        await _export(update, context, t, unit)
    elif what == "r":
        await _reports(update, context, t, unit, kind)
    elif what == "d":
        await _draft(update, context, t, unit, kind)
    elif what == "g":
        await _send_draft(update, context, t, unit, kind)
    elif what == "f":
        clock = t.services.clock
        year = await _year(t, unit)
        await reports.start_upload(t.session, t.person, unit, year, kind, clock.now())
        await send(update, context, t.render("summary/upload_ask", unit=unit))


async def _send_file(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    data: bytes | str,
    filename: str,
    caption: str,
    photo: bool = False,
) -> None:
    """A document or photo to this chat (bytes, or a Telegram file_id); no transaction held."""
    chat = update.effective_chat
    assert chat is not None
    await end_transaction()
    if photo:
        await context.bot.send_photo(chat.id, data, caption=caption)
    else:
        await context.bot.send_document(chat.id, data, filename=filename, caption=caption)


async def _chart(update, context, t: Turn, unit: Unit) -> None:
    # Imported here, on first use: matplotlib, openpyxl and python-docx are ~70 MB of an idle bot.
    from bot.documents import chart
    clock = t.services.clock
    view = await summary.for_unit(t.session, unit.id, clock.now(), clock.tz)
    today = clock.today()
    if not view.children:
        await send(update, context, t.render("summary/no_children", unit=unit))
        return
    words = _pairs(t, "summary/chart", unit=unit, today=today)
    bars = [(child.unit.name, child.pledged_share) for child in view.children]
    png = await asyncio.to_thread(chart.completion_png, words["title"], words["xlabel"], bars)
    await _send_file(update, context, png, f"{unit.code}.png", words["caption"], photo=True)


async def _export(update, context, t: Turn, unit: Unit) -> None:
    # Imported here, on first use: matplotlib, openpyxl and python-docx are ~70 MB of an idle bot.
    from bot.documents import members_xlsx
    clock = t.services.clock
    today = clock.today()
    caption = _pairs(t, "summary/xlsx", unit=unit, today=today)["caption"]
    listing = await exports.collect_member_rows(t.session, unit, clock.now(), clock.tz)
    labels = members_xlsx.labels_from(t.services.renderer, t.locale, listing.year)
    data = await asyncio.to_thread(members_xlsx.members_xlsx, listing, labels)
    filename = f"{unit.code}-{today.isoformat()}.xlsx"
    await _send_file(update, context, data, filename, caption)


async def _year(t: Turn, unit: Unit) -> int:
    clock = t.services.clock
    view = await summary.for_unit(t.session, unit.id, clock.now(), clock.tz)
    return view.year or clock.today().year


async def _draft_bytes(t: Turn, unit: Unit, kind: ReportKind) -> tuple[summary.ReportFacts, bytes]:
    """The draft's facts read now, its .docx built in a worker thread."""
    # Imported here, on first use: matplotlib, openpyxl and python-docx are ~70 MB of an idle bot.
    from bot.documents import report_docx
    clock = t.services.clock
    facts = await summary.report_facts(t.session, unit, kind, clock.now(), clock.tz)
    text = t.render("report/draft", f=facts)
    return facts, await asyncio.to_thread(report_docx.build, text)


def _draft_name(unit: Unit, kind: ReportKind, year: int) -> str:
    return f"BC-{reports.CODE_OF_KIND[kind]}-{year}-{unit.code}.docx"


async def _draft(update, context, t: Turn, unit: Unit, kind: ReportKind) -> None:
    facts, data = await _draft_bytes(t, unit, kind)
    caption = t.render("summary/draft_caption", unit=unit, kind=kind.value, year=facts.year)
    await _send_file(update, context, data, _draft_name(unit, kind, facts.year), caption)


async def _send_draft(update, context, t: Turn, unit: Unit, kind: ReportKind) -> None:
    facts, data = await _draft_bytes(t, unit, kind)
    assert t.person.member is not None
    report = await reports.send_generated(
        t.session,
        t.person.member,
        unit,
        facts.year,
        kind,
        _draft_name(unit, kind, facts.year),
        data,
        t.services.clock.now(),
    )
    await send(update, context, t.render("summary/report_sent", report=report, unit=unit))


async def _reports(update, context, t: Turn, unit: Unit, kind: ReportKind) -> None:
    year = await _year(t, unit)
    member = t.person.member
    may_send = await may(t.session, member, Action.send_report, unit)
    own = (await reports.latest(t.session, [unit.id], year, kind)).get(unit.id)
    children = await reports.children_status(t.session, unit, year, kind)
    code = reports.CODE_OF_KIND[kind]
    rows = [[(t.label("sm_draft"), f"sm:d:{unit.id}:{code}")]]
    if may_send:
        rows.append([(t.label("sm_send_draft"), f"sm:g:{unit.id}:{code}")])
        rows.append([(t.label("sm_upload"), f"sm:f:{unit.id}:{code}")])
    for row in children:
        if row.report is not None:
            rows.append([(f"{t.label('sm_open')} {row.unit.name}", f"sm:o:{row.report.id}")])
    rows.append([(t.label("sm_back"), f"sm:u:{unit.id}")])
    text = t.render(
        "summary/reports",
        unit=unit,
        kind=kind.value,
        year=year,
        own=own,
        may_send=may_send,
        children=children,
    )
    await show(update, context, text, keyboard(rows))


async def _open_report(update, context, t: Turn, report_id: int) -> None:
    report = await reports.open_report(t.session, t.person.member, report_id)
    unit = await t.session.get(Unit, report.unit_id)
    await answer_query(update)
    caption = t.render("summary/report_caption", report=report, unit=unit)
    source: bytes | str | None = report.content if report.content is not None else report.file_id
    if source is None:
        text = t.render("summary/report_unavailable", report=report, unit=unit)
        await send(update, context, text)
        return
    await _send_file(update, context, source, report.filename, caption)


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file: the signed report the leader was asked for, or whatever a stray file means."""
    message = update.effective_message
    assert message is not None and message.document is not None
    file = message.document
    async with turn(update, context) as t:
        if not await reports.awaiting_upload(t.session, t.person):
            waiting = False
        else:
            waiting = True
            try:
                reports.check_upload(file.file_name)
            except Refusal as refusal:
                await send(update, context, t.render(refusal.template, **refusal.context))
                return
    if not waiting:
        await router.not_text(update, context)
        return
    content = None
    if file.file_size is not None and file.file_size <= reports.KEEP_BYTES_UP_TO:
        content = bytes(await (await file.get_file()).download_as_bytearray())
    async with turn(update, context) as t:
        try:
            report, unit = await reports.receive_upload(
                t.session, t.person, file.file_name, file.file_id, content, t.services.clock.now()
            )
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))
            return
        await send(update, context, t.render("summary/report_sent", report=report, unit=unit))
