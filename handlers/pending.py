"""/pending: for officers and leaders, who in their units has not pledged yet."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.services import pending as pending_service
from bot.services.authorization import Action, units_for
from handlers.common import send, turn


async def pending(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/pending: the not-yet-pledged list of each unit the person is officer or leader of."""
    async with turn(update, context) as t:
        units = await units_for(t.session, t.person.member, Action.view_pending)
        if not units:
            await send(update, context, t.render("pending/not_allowed"))
            return
        today = t.services.clock.today()
        for unit in units:
            view = await pending_service.for_unit(t.session, unit, today)
            if view is None:
                await send(update, context, t.render("topic/none", unit=unit))
                continue
            await send(update, context, t.render("pending/list", view=view))
