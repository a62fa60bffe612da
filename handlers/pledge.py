"""/pledge (the guided wizard), its buttons, and /mypledge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from telegram import Update
from telegram.ext import ContextTypes

from bot.read_batch import ReadBatch
from bot.services import pledges, updates
from bot.services.campaigns import CampaignInForce
from bot.services.errors import Refusal
from bot.write_batch import WriteBatch
from handlers.common import (
    NotOnReader,
    Turn,
    answer_query,
    end_transaction,
    keyboard,
    send,
    services,
    show,
    stacked,
    turn,
)
from handlers.topic import campaign_in_force, campaign_or_explain


def _step_markup(t: Turn, view: pledges.WizardView):
    v = view.version
    if view.is_review:
        return keyboard(
            [
                [(t.label("submit"), f"pl:submit:{v}")],
                [(t.label("back"), f"pl:back:{v}"), (t.label("cancel"), f"pl:cancel:{v}")],
            ]
        )
    nav = [(t.label("skip"), f"pl:skip:{v}")]
    if view.step > 0:
        nav.insert(0, (t.label("back"), f"pl:back:{v}"))
    return keyboard([nav, [(t.label("cancel"), f"pl:cancel:{v}")]])


def _render_view(t: Turn, view: pledges.WizardView) -> str:
    if view.is_review:
        return t.render("pledge/review", view=view)
    return t.render("pledge/step", view=view)


def screen(t: Turn, view: pledges.WizardView):
    """The wizard's screen for `view`: its text and its buttons."""
    return _render_view(t, view), _step_markup(t, view)


async def pledge(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/pledge, or the "file my pledge" button: open the wizard at the saved step."""
    await answer_query(update)
    if await _grouped_open(update, context):
        return
    async with turn(update, context) as t:
        in_force = await campaign_or_explain(update, context, t)
        if in_force is None:
            return
        clock = t.services.clock
        try:
            view = await pledges.open_wizard(t.session, t.person, in_force, clock.now(), clock.tz)
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))
            return
        await send(update, context, t.render("pledge/intro", view=view, campaign=in_force.campaign))
        await send(update, context, _render_view(t, view), _step_markup(t, view))


async def section_text(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn) -> None:
    """Text typed during the wizard: the answer to the current section."""
    message = update.effective_message
    assert message is not None
    in_force = await campaign_or_explain(update, context, t)
    if in_force is None:
        return
    try:
        view = await pledges.answer(
            t.session, t.person, in_force, message.text or "", t.services.clock.now()
        )
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))
        return
    text = stacked(t.render("pledge/saved"), _render_view(t, view))
    await send(update, context, text, _step_markup(t, view))


@dataclass
class _Grouped:
    """A member's turn on a reader, with what the group path needs."""

    t: Turn
    in_force: CampaignInForce
    reads: ReadBatch
    batch: WriteBatch


@asynccontextmanager
async def _grouped_turn(
    update: Update, context: ContextTypes.DEFAULT_TYPE
) -> AsyncIterator[_Grouped | None]:
    """A turn for the group path (bot.read_batch, bot.write_batch), or None where it does
    not apply: not a joined member on a reader, no campaign in force (the
    ORM path then explains). Who is writing may come from the read cache: the turn's
    writes go in only if the database still says the same (`pledges._store_grouped`)."""
    db = services(context).db
    batch, reads = db.write_batch, db.read_batch
    try:
        async with turn(update, context, reads_only=True, reader_or_nothing=True) as t:
            in_force = await campaign_in_force(t) if t.person.joined else None
            # What the session read is all it will: no snapshot held while the step waits
            # for its reads and its group commit.
            await end_transaction()
            yield _Grouped(t, in_force, reads, batch) if in_force is not None else None
    except NotOnReader:  # someone new, or unblocking: the ORM path records them
        yield None


async def _grouped_open(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """/pledge, tried first in a group commit; False when this path does not
    apply (a first pledge, a lost race, a refusal), and it runs on the ORM path."""
    async with _grouped_turn(update, context) as grouped:
        if grouped is None:
            return False
        t, clock = grouped.t, grouped.t.services.clock
        try:
            view = await pledges.open_grouped(
                grouped.reads, grouped.batch, t.person, grouped.in_force, clock.now(), clock.tz,
                updates.current(),
            )
        except Refusal:
            return False
        if view is None:
            return False
        intro = t.render("pledge/intro", view=view, campaign=grouped.in_force.campaign)
        await send(update, context, intro)
        await send(update, context, _render_view(t, view), _step_markup(t, view))
    return True


async def grouped_answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """Typed text, tried first as a wizard answer in a group commit; False when
    it is not one (or lost a race), and the router handles it on the ORM path."""
    message = update.effective_message
    if message is None:
        return False
    async with _grouped_turn(update, context) as grouped:
        if grouped is None:
            return False
        t = grouped.t
        try:
            view = await pledges.answer_grouped(
                grouped.reads, grouped.batch, t.person, grouped.in_force, message.text or "",
                t.services.clock.now(), updates.current(),
            )
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))
            return True
        if view is None:
            return False
        text = stacked(t.render("pledge/saved"), _render_view(t, view))
        await send(update, context, text, _step_markup(t, view))
    return True


async def grouped_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, action: str, version: int
) -> bool:
    """Back, skip or submit, tried first in a group commit; False when this path
    does not apply (or lost a race, or refused), and the button is handled on the ORM
    path, which refuses in the one place refusals are shown."""
    if action not in {"back", "skip", "submit"}:
        return False
    async with _grouped_turn(update, context) as grouped:
        if grouped is None:
            return False
        t, clock, mark = grouped.t, grouped.t.services.clock, updates.current()
        try:
            if action == "submit":
                result = await pledges.submit_grouped(
                    grouped.reads, grouped.batch, t.person, grouped.in_force, version,
                    clock.now(), clock.tz, mark,
                )
                if result is None:
                    return False
                text, markup = t.render("pledge/submitted", result=result), None
            else:
                view = await pledges.move_grouped(
                    grouped.reads, grouped.batch, t.person, grouped.in_force, version,
                    -1 if action == "back" else 1, clock.now(), mark,
                )
                if view is None:
                    return False
                text, markup = _render_view(t, view), _step_markup(t, view)
        except Refusal:
            return False
        await answer_query(update)
        await show(update, context, text, markup)
    return True


async def wizard_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Back, skip, cancel and submit ("pl:<action>:<version>"); stale or forged ones are refused."""
    query = update.callback_query
    assert query is not None and query.data is not None
    parts = query.data.split(":")
    well_formed = len(parts) == 3 and parts[2].isdigit()
    if well_formed and await grouped_button(update, context, parts[1], int(parts[2])):
        return
    async with turn(update, context) as t:
        action = parts[1] if len(parts) == 3 else ""
        version = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
        if action not in {"back", "skip", "cancel", "submit"} or version is None:
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        in_force = await campaign_or_explain(update, context, t)
        if in_force is None:
            return
        clock = t.services.clock
        try:
            if action == "cancel":
                await pledges.move(t.session, t.person, in_force, version, 0, clock.now())
                await pledges.cancel(t.session, t.person)
                await answer_query(update)
                await show(update, context, t.render("pledge/cancelled"))
                return
            if action == "submit":
                result = await pledges.submit(
                    t.session, t.person, in_force, version, clock.now(), clock.tz
                )
                await answer_query(update)
                await show(update, context, t.render("pledge/submitted", result=result))
                return
            view = await pledges.move(
                t.session, t.person, in_force, version, -1 if action == "back" else 1, clock.now()
            )
        except Refusal as refusal:
            alert = refusal.template == "common/stale_button"
            await answer_query(
                update,
                t.render(refusal.template, **refusal.context) if alert else None,
                alert=alert,
            )
            if not alert:
                await send(update, context, t.render(refusal.template, **refusal.context))
            return
        await answer_query(update)
        await show(update, context, _render_view(t, view), _step_markup(t, view))


async def my_pledge(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/mypledge: the member's own pledge and its status, nobody else's."""
    async with turn(update, context, reads_only=True) as t:
        in_force = await campaign_or_explain(update, context, t)
        if in_force is None:
            return
        view = await pledges.my_pledge(t.session, t.person, in_force)
        markup = None
        if view.status in ("on_time", "late"):
            markup = keyboard([[(t.label("print_pledge"), "rv:mine")]])
        await send(
            update, context, t.render("pledge/mine", view=view, member=t.person.member), markup
        )
