"""/invite: an officer or leader gets a deep link and a printable QR code for a unit."""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.ext import ContextTypes

from bot.models import Role, Unit
from bot.services import flows, invites, lifecycle
from bot.services.authorization import Action, units_for
from bot.services.errors import Refusal
from bot.services.roles import may_grant
from handlers.common import (
    Turn,
    answer_query,
    end_transaction,
    keyboard,
    send,
    show,
    staff_flow_button,
    turn,
)

FLOW = "invite"


async def invite_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/invite: pick one of the units the person may invite to."""
    async with turn(update, context) as t:
        tops = await units_for(t.session, t.person.member, Action.invite)
        if not tops:
            await send(update, context, t.render("invite/not_allowed"))
            return
        units = await lifecycle.subtree_units(t.session, tops)
        state = await flows.begin(t.session, t.person, FLOW, "unit", {}, t.services.clock.now())
        v = state.version
        rows = [[(f"{u.code} – {u.name}"[:60], f"iv:u:{u.id}:{v}")] for u in units]
        rows.append([(t.label("cancel"), f"iv:no:{v}")])
        await send(update, context, t.render("invite/pick_unit"), keyboard(rows))


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The unit and kind buttons; every press is checked against the person's roles again."""
    await staff_flow_button(update, context, FLOW, _press)


async def _press(update, context, t: Turn, press: flows.Press, state) -> None:
    actor = t.person.member
    step = state.data.get("step")
    if press.action == "no":
        await flows.finish(t.session, state)
        await answer_query(update)
        await show(update, context, t.render("common/flow_cancelled"))
        return
    if press.action == "u" and step == "unit":
        unit = await t.session.get(Unit, press.number)
        if unit is None or not await lifecycle.in_reach(t.session, actor, unit, Action.invite):
            raise Refusal("invite/out_of_scope")
        state = await flows.advance(
            t.session, t.person, state, "kind", t.services.clock.now(), unit_id=unit.id
        )
        v = state.version
        row = [(t.label("invite_member"), f"iv:k:member:{v}")]
        if await may_grant(t.session, actor, unit, Role.officer):
            row.append((t.label("invite_officer"), f"iv:k:officer:{v}"))
        await answer_query(update)
        await show(
            update,
            context,
            t.render("invite/pick_kind", unit=unit),
            keyboard([row, [(t.label("cancel"), f"iv:no:{v}")]]),
        )
        return
    if press.action == "k" and step == "kind" and press.arg in ("member", "officer"):
        unit = await t.session.get(Unit, state.data.get("unit_id"))
        if unit is None:
            raise Refusal("common/stale_button")
        await flows.finish(t.session, state)
        made = await invites.invite_by(
            t.session, actor, unit, Role(press.arg), t.services.clock.now()
        )
        link = invites.deep_link(context.bot.username, made.code)
        text = t.render("invite/created", invite=made, unit=unit, link=link)
        caption = t.render("invite/qr_caption", unit=unit, link=link)
        await answer_query(update)
        await show(update, context, text)
        await end_transaction()
        png = await asyncio.to_thread(invites.qr_png, link)
        chat = update.effective_chat
        assert chat is not None
        await context.bot.send_photo(chat.id, png, caption=caption)
        return
    raise Refusal("common/stale_button")
