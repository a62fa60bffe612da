"""Plain messages: sent to whatever flow the chat is in, as the stored state says."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.services import broadcasts, joining, pledges, reports, review
from bot.services.chat_state import get_state
from handlers import broadcast as broadcast_handlers
from handlers import members as members_handlers
from handlers import pledge as pledge_handlers
from handlers import review as review_handlers
from handlers import roles as roles_handlers
from handlers import roster as roster_handlers
from handlers import start as start_handlers
from handlers.common import send, turn

# Flows of officers that take typed text (returning a pledge, finding a member, a paper form).
_OFFICER_FLOWS = (review.FLOW_RETURN, review.FLOW_SEARCH, pledges.PAPER_FLOW)

# What each flow expects when it gets something it cannot use.
_EXPECTING = {
    joining.FLOW_CONSENT: "start/press_consent",
    joining.FLOW_PHONE: "join/press_phone_button",
    reports.FLOW_UPLOAD: "summary/upload_expected",
}


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Typed text: a wizard answer, a new member's name, or a hint at the commands."""
    if await pledge_handlers.grouped_answer(update, context):
        return
    async with turn(update, context) as t:
        state = await get_state(t.session, t.person.identity.id)
        flow = state.flow if state else None
        if flow == pledges.FLOW:
            await pledge_handlers.section_text(update, context, t)
        elif flow in _OFFICER_FLOWS:
            await review_handlers.text_in_flow(update, context, t, flow)
        elif flow == broadcasts.FLOW:
            await broadcast_handlers.typed(update, context, t)
        elif flow == joining.FLOW_NAME:
            await start_handlers.full_name(update, context, t)
        elif flow == roles_handlers.FLOW and state is not None:
            await roles_handlers.text(update, context, t, state)
        elif flow == members_handlers.FLOW and state is not None:
            await members_handlers.text(update, context, t, state)
        elif flow in _EXPECTING:
            await send(update, context, t.render(_EXPECTING[flow]))
        else:
            name = "common/hint" if t.person.joined else "start/no_invite"
            if t.person.inactive:
                name = "common/membership_inactive"
            await send(
                update,
                context,
                t.render(name, member=t.person.member, unit=t.person.unit, roles=[]),
            )


async def not_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A sticker, photo, voice note…: say what the current step needs, change nothing.

    A document when no step waits is a roster for an officer (refused for anyone else).
    """
    async with turn(update, context) as t:
        state = await get_state(t.session, t.person.identity.id)
        flow = state.flow if state else None
        if flow == broadcasts.FLOW:  # a photo (with its caption) can be the notice
            await broadcast_handlers.typed(update, context, t)
            return
        message = update.effective_message
        waiting = flow in _EXPECTING or flow in (pledges.FLOW, joining.FLOW_NAME, *_OFFICER_FLOWS)
        if message is not None and message.document is not None and t.person.joined and not waiting:
            await roster_handlers.document(update, context, t)
            return
        if flow in _EXPECTING:
            name = _EXPECTING[flow]
        elif flow in (pledges.FLOW, joining.FLOW_NAME, *_OFFICER_FLOWS):
            name = "common/text_expected"
        else:
            name = "common/hint" if t.person.joined else "start/no_invite"
        await send(
            update, context, t.render(name, member=t.person.member, unit=t.person.unit, roles=[])
        )
