"""/broadcast: an officer's notice to their subtree (wizard, preview, send or schedule, stop)."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.context import Services
from bot.models import Broadcast, BroadcastAudience, Unit
from bot.services import broadcasts
from bot.services.errors import Refusal
from bot.settings import LOCALES
from bot.telegram_html import visible_length
from handlers.common import Turn, answer_query, keyboard, send, show, turn

_AUDIENCES = {
    "s": BroadcastAudience.subtree,
    "u": BroadcastAudience.unit,
    "n": BroadcastAudience.not_pledged,
    "j": BroadcastAudience.not_joined,
}


def render_message(svc: Services, broadcast: Broadcast, unit: Unit, locale: str | None) -> str:
    """The notice as a member reads it: who it is from, then the officer's text (escaped)."""
    return svc.renderer.text(
        "broadcast/message", locale or svc.settings.locale, unit=unit, text=broadcast.text
    )


def message_renderer(svc: Services) -> broadcasts.MessageRenderer:
    return lambda broadcast, unit, locale: render_message(svc, broadcast, unit, locale)


def header_room(svc: Services, unit: Unit) -> int:
    """Characters the members' template adds around the text, in its longest locale."""
    empty = Broadcast(sender_member_id=0, unit_id=0, audience="subtree", text="", status="queued")
    return max(visible_length(render_message(svc, empty, unit, loc)) for loc in LOCALES) + 2


def _stop_markup(t: Turn, ids: list[int]):
    return keyboard([[(f"{t.label('bc_stop')} #{id_}", f"bc:stop:{id_}")] for id_ in ids])


async def _refuse(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, r: Refusal) -> None:
    """A stale or forged button gets an alert; any other refusal a message, state kept."""
    if update.callback_query is not None and r.template in (
        "common/stale_button",
        "broadcast/not_yours",
        "broadcast/already_finished",
    ):
        await answer_query(update, t.render(r.template, **r.context), alert=True)
        return
    await answer_query(update)
    await send(update, context, t.render(r.template, **r.context))


async def _show_view(
    update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, view: broadcasts.WizardView
) -> None:
    v = view.version
    cancel = (t.label("cancel"), f"bc:x:{v}")
    if view.step == broadcasts.PICK_UNIT:
        rows = [[(unit.name[:60], f"bc:u:{v}:{unit.id}")] for unit in view.units]
        await show(update, context, t.render("broadcast/pick_unit"), keyboard([*rows, [cancel]]))
    elif view.step == broadcasts.CONTENT:
        await show(
            update, context, t.render("broadcast/ask_content", unit=view.unit), keyboard([[cancel]])
        )
    elif view.step == broadcasts.AUDIENCE:
        rows = [
            [(t.label("bc_all"), f"bc:a:{v}:s")],
            [(t.label("bc_sub"), f"bc:a:{v}:u")],
            [(t.label("bc_unpledged"), f"bc:a:{v}:n")],
            [(t.label("bc_unjoined"), f"bc:a:{v}:j")],
            [cancel],
        ]
        await send(update, context, t.render("broadcast/pick_audience", unit=view.unit),
                   keyboard(rows))  # fmt: skip
    elif view.step == broadcasts.PICK_CHILD:
        rows = [[(unit.name[:60], f"bc:c:{v}:{unit.id}")] for unit in view.units]
        await show(update, context, t.render("broadcast/pick_child", unit=view.unit),
                   keyboard([*rows, [cancel]]))  # fmt: skip
    elif view.step == broadcasts.PREVIEW:
        await _show_preview(update, context, t, view)
    elif view.step == broadcasts.SCHEDULE:
        tomorrow = broadcasts.tomorrow_at(t.services.clock.now(), t.services.clock.tz)
        rows = [[(t.label("bc_tomorrow"), f"bc:tm:{v}")], [cancel]]
        await show(update, context, t.render("broadcast/ask_schedule", tomorrow=tomorrow),
                   keyboard(rows))  # fmt: skip


async def _show_preview(
    update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, view: broadcasts.WizardView
) -> None:
    """The notice exactly as members will get it, then the counts and the choices."""
    preview = view.preview
    assert preview is not None
    v = view.version
    if t.session.in_transaction():  # never hold the database across the network calls
        await t.session.commit()
    chat = update.effective_chat
    assert chat is not None
    if preview.audience != BroadcastAudience.not_joined:
        message = render_message(t.services, preview.draft(), preview.unit, t.locale)
        if preview.photo:
            await context.bot.send_photo(chat.id, preview.photo, caption=message)
        else:
            await context.bot.send_message(chat.id, message)
    rows = [[(t.label("bc_send_now"), f"bc:go:{v}")]]
    if preview.audience != BroadcastAudience.not_joined:
        rows.append([(t.label("bc_schedule"), f"bc:sch:{v}")])
    rows.append([(t.label("cancel"), f"bc:x:{v}")])
    await send(update, context, t.render("broadcast/preview", preview=preview), keyboard(rows))


async def broadcast(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/broadcast: the officer's broadcasts in progress (with stop buttons), then the wizard."""
    async with turn(update, context) as t:
        clock = t.services.clock
        try:
            view = await broadcasts.open_wizard(t.session, t.person, clock.now())
        except Refusal as refusal:
            await _refuse(update, context, t, refusal)
            return
        running = await broadcasts.in_progress(t.session, t.person.member)
        if running:
            markup = _stop_markup(t, [item.broadcast.id for item in running])
            await send(update, context, t.render("broadcast/in_progress", items=running), markup)
        await _show_view(update, context, t, view)


async def typed(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn) -> None:
    """Text or a photo sent during the wizard: the content, or a typed date to schedule."""
    message = update.effective_message
    assert message is not None
    svc, clock = t.services, t.services.clock
    state_step = await broadcasts.current_step(t.session, t.person)
    try:
        if state_step == broadcasts.SCHEDULE and message.text:
            when = broadcasts.parse_when(message.text, clock.tz)
            await _schedule(update, context, t, None, when)
            return
        photo = message.photo[-1].file_id if message.photo else None
        text = (message.caption if photo else message.text) or ""
        if not photo and not message.text:
            raise Refusal("broadcast/content_expected")
        view = await broadcasts.content(
            t.session, t.person, text, photo, lambda unit: header_room(svc, unit), clock.now()
        )
    except Refusal as refusal:
        await _refuse(update, context, t, refusal)
        return
    await _show_view(update, context, t, view)


async def _schedule(update, context, t: Turn, version: int | None, when) -> None:
    clock = t.services.clock
    made = await broadcasts.confirm(
        t.session, t.person, version, message_renderer(t.services), clock.now(), clock.tz, when
    )
    await answer_query(update)
    await send(
        update,
        context,
        t.render("broadcast/scheduled", broadcast=made, when=when),
        _stop_markup(t, [made.id]),
    )


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every "bc:" button; the data is never trusted: version, sender and role are re-checked."""
    query = update.callback_query
    assert query is not None and query.data is not None
    parts = query.data.split(":")
    action = parts[1] if len(parts) >= 3 else ""
    numbers = [int(p) for p in parts[2:] if p.isdigit()]
    async with turn(update, context) as t:
        clock = t.services.clock
        try:
            if action == "stop" and len(parts) == 3 and len(numbers) == 1:
                done = await broadcasts.cancel_broadcast(
                    t.session, t.person, numbers[0], clock.now()
                )
                await answer_query(update)
                await show(update, context, t.render("broadcast/cancelled", result=done))
                return
            if action in ("u", "c") and len(parts) == 4 and len(numbers) == 2:
                version, unit_id = numbers
                if action == "u":
                    view = await broadcasts.choose_unit(
                        t.session, t.person, version, unit_id, clock.now()
                    )
                else:
                    view = await broadcasts.choose_child(
                        t.session, t.person, version, unit_id, clock.now(), clock.tz
                    )
            elif action == "a" and len(parts) == 4 and len(numbers) == 1 and parts[3] in _AUDIENCES:
                view = await broadcasts.choose_audience(
                    t.session, t.person, numbers[0], _AUDIENCES[parts[3]], clock.now(), clock.tz
                )
            elif action in ("go", "sch", "tm", "x") and len(parts) == 3 and len(numbers) == 1:
                version = numbers[0]
                if action == "x":
                    await broadcasts.cancel_wizard(t.session, t.person, version)
                    await answer_query(update)
                    await show(update, context, t.render("broadcast/wizard_cancelled"))
                    return
                if action == "tm":
                    when = broadcasts.tomorrow_at(clock.now(), clock.tz)
                    await _schedule(update, context, t, version, when)
                    return
                if action == "sch":
                    view = await broadcasts.ask_schedule(t.session, t.person, version, clock.now())
                else:
                    await _send_now(update, context, t, version)
                    return
            else:
                raise Refusal("common/stale_button")
        except Refusal as refusal:
            await _refuse(update, context, t, refusal)
            return
        await answer_query(update)
        await _show_view(update, context, t, view)


async def _send_now(update, context, t: Turn, version: int) -> None:
    clock = t.services.clock
    made = await broadcasts.confirm(
        t.session, t.person, version, message_renderer(t.services), clock.now(), clock.tz
    )
    await answer_query(update)
    markup = _stop_markup(t, [made.id]) if made.recipients else None
    await show(update, context, t.render("broadcast/queued", broadcast=made), markup)
    worker = context.bot_data.get("background")
    if worker is not None:  # deliver now rather than at the next poll
        worker.worker.wake()
