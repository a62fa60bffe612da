"""/reminders: the deadlines ahead and pausing reminders; blocked/unblocked bot updates."""

from __future__ import annotations

from datetime import timedelta

from telegram import ChatMember, Update
from telegram.ext import ContextTypes

from bot.services import campaigns, mute
from bot.services.errors import Refusal
from bot.services.people import load_person
from handlers.common import CHANNEL, Turn, answer_query, keyboard, send, services, show, turn
from handlers.topic import campaign_or_explain

MUTE_CHOICES = (7, 14, 30)


async def _menu(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, notice: str | None):
    in_force = await campaign_or_explain(update, context, t)
    if in_force is None:
        return
    assert t.person.member is not None
    today = t.services.clock.today()
    ahead = campaigns.upcoming(in_force, today)
    muted = mute.is_muted(t.person.member, today)
    rows = [[(t.label(f"mute_{days}"), f"rm:mute:{days}") for days in MUTE_CHOICES]]
    if muted:
        rows = [[(t.label("unmute"), "rm:unmute")], *rows]
    text = t.render(
        "reminders/menu", ahead=ahead, member=t.person.member, muted=muted, notice=notice
    )
    await show(update, context, text, keyboard(rows))


async def reminders(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/reminders [DD/MM/YYYY]: deadlines ahead; with a date, pause reminders until then."""
    async with turn(update, context) as t:
        if context.args and t.person.member is not None:
            today = t.services.clock.today()
            until = mute.parse_day(" ".join(context.args), today)
            if until is None:
                await send(update, context, t.render("reminders/bad_date"))
                return
            try:
                await mute.mute_until(t.session, t.person.member, until, today)
            except Refusal as refusal:
                await send(update, context, t.render(refusal.template, **refusal.context))
                return
            await _menu(update, context, t, "muted")
            return
        await _menu(update, context, t, None)


async def reminders_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """rm:mute:N or rm:unmute; anything else is a forged button."""
    query = update.callback_query
    assert query is not None and query.data is not None
    parts = query.data.split(":")
    async with turn(update, context) as t:
        valid_mute = (
            len(parts) == 3
            and parts[1] == "mute"
            and parts[2].isdigit()
            and (int(parts[2]) in MUTE_CHOICES)
        )
        if t.person.member is None or not (valid_mute or parts == ["rm", "unmute"]):
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        await answer_query(update)
        today = t.services.clock.today()
        if valid_mute:
            until = today + timedelta(days=int(parts[2]) - 1)
            await mute.mute_until(t.session, t.person.member, until, today)
            await _menu(update, context, t, "muted")
        else:
            await mute.unmute(t.session, t.person.member)
            await _menu(update, context, t, "unmuted")


async def chat_member(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The person blocked or unblocked the bot in their private chat."""
    change = update.my_chat_member
    if change is None or change.chat.type != "private":
        return
    svc = services(context)
    blocked = change.new_chat_member.status in (ChatMember.BANNED, ChatMember.LEFT)
    async with svc.db.session() as session:
        person = await load_person(
            session, CHANNEL, str(change.from_user.id), str(change.chat.id), svc.clock.now()
        )
        await mute.set_blocked(session, person.identity, blocked, svc.clock.now())
