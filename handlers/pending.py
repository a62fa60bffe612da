"""/pending: for officers and leaders, per unit they hold: who has not pledged (listed), and
buttons to the paged lists of who has not joined the bot and which pledges await review."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.models import UnitLevel
from bot.services import pending as pending_service
from bot.services import review
from bot.services.authorization import Action, grassroots_of, units_for
from handlers.common import keyboard, send, turn


async def pending(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/pending: the lists of each unit the person is officer or leader of."""
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
            lists = await review.lists_for(t.session, t.person.member, unit.id, today)
            rows = []
            if lists.not_joined:
                rows.append([(t.label("list_not_joined"), f"rv:nj:{unit.id}:0")])
            if lists.awaiting:
                rows.append([(t.label("list_awaiting"), f"rv:aw:{unit.id}:0")])
            # Paper forms are typed in by officers of a CĐCS (who may read its pledges).
            grassroots = await grassroots_of(t.session, unit)
            if grassroots.level == UnitLevel.grassroots and await units_for(
                t.session, t.person.member, Action.review_pledge
            ):
                rows.append([(t.label("enter_paper"), "rv:paper")])
            text = t.render(
                "pending/list",
                view=view,
                not_joined=len(lists.not_joined),
                awaiting=len(lists.awaiting),
            )
            await send(update, context, text, keyboard(rows) if rows else None)
