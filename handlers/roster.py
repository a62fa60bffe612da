"""A roster sent as a document: preview, then confirm or cancel ("ro:" buttons)."""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot import rosterfile
from bot.models import Unit
from bot.services import roster, roster_upload
from bot.services.errors import Refusal
from handlers.common import Turn, answer_query, keyboard, send, show, turn

PROBLEMS_SHOWN = 20
UNITS_SHOWN = 10


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn) -> None:
    """A file from a member who joined (the router sends it here when no step waits)."""
    message = update.effective_message
    assert message is not None and message.document is not None
    doc = message.document
    upload = roster_upload.Upload(doc.file_id, doc.file_name or "", doc.file_size)
    try:
        units, version = await roster_upload.start(
            t.session, t.person, upload, t.services.clock.now()
        )
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))
        return
    if len(units) > 1:
        rows = [[(unit.name, f"ro:u:{version}:{unit.id}")] for unit in units]
        rows.append([(t.label("cancel"), f"ro:no:{version}")])
        await send(
            update, context, t.render("roster/choose_unit", file=upload.filename), keyboard(rows)
        )
        return
    await _preview(update, context, t, upload, units[0], version)


async def _read(context: ContextTypes.DEFAULT_TYPE, upload: roster_upload.Upload):
    """Download the file and parse it off the event loop (raises Refusal for a bad file)."""
    try:
        file = await context.bot.get_file(upload.file_id)
        data = bytes(await file.download_as_bytearray())
    except BadRequest as error:
        if "too big" in str(error).lower():
            raise roster_upload.bad_file("too_big") from None
        raise
    if len(data) > roster_upload.MAX_BYTES:
        raise roster_upload.bad_file("too_big")
    try:
        return await asyncio.to_thread(rosterfile.read, data, upload.filename)
    except rosterfile.BadFile as error:
        raise roster_upload.bad_file(error.reason) from None


async def _preview(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    t: Turn,
    upload: roster_upload.Upload,
    unit: Unit,
    version: int,
) -> None:
    try:
        parsed = await _read(context, upload)
    except Refusal as refusal:
        await roster_upload.drop(t.session, t.person)
        await show(update, context, t.render(refusal.template, **refusal.context))
        return
    # A preview only reads: on SQLite the reader never holds the write lock.
    async with t.services.db.reader() as reader:
        planned = await roster.plan(reader, unit, parsed)
    if not planned.ok:  # a file with bad rows ends the flow: it is never imported
        await roster_upload.drop(t.session, t.person)
    ctx = {"plan": planned, "unit": unit, "file": upload.filename}
    if not planned.ok:
        await show(update, context, t.render("roster/problems", shown=PROBLEMS_SHOWN, **ctx))
        return
    markup = keyboard(
        [[(t.label("ro_confirm"), f"ro:ok:{version}"), (t.label("ro_cancel"), f"ro:no:{version}")]]
    )
    await show(update, context, t.render("roster/preview", shown=UNITS_SHOWN, **ctx), markup)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """ro:u:<version>:<unit id> (which unit), ro:ok:<version> (import), ro:no:<version>."""
    query = update.callback_query
    assert query is not None and query.data is not None
    parts = query.data.split(":")
    action = parts[1] if len(parts) >= 3 else ""
    numbers = [int(p) for p in parts[2:] if p.isdigit()]
    expected = {"u": 2, "ok": 1, "no": 1}.get(action)
    async with turn(update, context) as t:
        if expected is None or len(numbers) != expected or len(parts) != 2 + expected:
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        version = numbers[0]
        now = t.services.clock.now()
        answered = False
        try:
            if action == "u":
                upload, unit, version = await roster_upload.choose_unit(
                    t.session, t.person, version, numbers[1], now
                )
                await answer_query(update)
                answered = True
                await _preview(update, context, t, upload, unit, version)
            elif action == "no":
                await roster_upload.cancel(t.session, t.person, version)
                await answer_query(update)
                await show(update, context, t.render("roster/cancelled"))
            else:
                upload, unit = await roster_upload.staged(t.session, t.person, version)
                await answer_query(update)
                answered = True
                parsed = await _read(context, upload)
                planned, unit = await roster_upload.confirm(
                    t.session, t.person, version, parsed, now
                )
                ctx = {"plan": planned, "unit": unit, "file": upload.filename}
                name = "roster/imported" if planned.applied else "roster/problems"
                await show(update, context, t.render(name, shown=PROBLEMS_SHOWN, **ctx))
        except Refusal as refusal:
            text = t.render(refusal.template, **refusal.context)
            if refusal.template == "common/stale_button" and not answered:
                await answer_query(update, text, alert=True)
                return
            if not answered:
                await answer_query(update)
            await send(update, context, text)
