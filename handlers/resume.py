"""An update whose effects were stored by a process that died before it answered.

Telegram delivers it again, and it must not be handled twice (bot.services.updates). But
silence would leave the member waiting, and a member who types their answer again would
file it under the next section. So the redelivery gets an answer of its own: their message
was kept, and here is where they are (the wizard's screen, or the way to their pledge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.services import pledges, updates
from bot.services.people import known_person
from handlers.common import (
    CHANNEL,
    answer_query,
    done_marks,
    new_turn,
    send,
    services,
    stacked,
)
from handlers.pledge import screen
from handlers.topic import campaign_in_force

logger = logging.getLogger(__name__)

# A delivery that finds the update done may have raced one still at work (two processes
# given it at once, or a retry while the first was slow): that one answers within moments,
# and its answered mark follows 0.2 s later. Only past this wait is the first taken for dead.
FIRST_DELIVERY_GRACE_S = 5.0
_POLL_S = 0.25


async def answer_if_lost(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """For a duplicate delivery: answer it when the first one never does."""
    mark = updates.current()
    if mark is None or update.effective_user is None or update.effective_chat is None:
        return
    svc = services(context)
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + FIRST_DELIVERY_GRACE_S
    while True:
        done = await updates.seen(svc.db, done_marks(svc), mark.channel, mark.update_id)
        if done is updates.Done.answered:
            logger.info("update %s handled by another delivery, skipped", mark.update_id)
            return
        if loop.time() >= give_up_at:
            break
        await asyncio.sleep(_POLL_S)
    logger.info("update %s was stored but never answered: answering it now", mark.update_id)
    # The first delivery may have answered the press already, or it is too old by now.
    with contextlib.suppress(TelegramError):
        await answer_query(update)
    async with svc.db.reader() as session:
        person = await known_person(session, CHANNEL, str(update.effective_user.id))
        if person is None:  # its first handling wrote, so the account is there
            return
        t = new_turn(svc, session, person)
        view = None
        if person.joined:
            in_force = await campaign_in_force(t)
            if in_force is not None:
                view = await pledges.wizard_now(session, person, in_force)
    note = t.render("common/answer_lost", in_wizard=view is not None, joined=person.joined)
    if view is None:
        await send(update, context, note)
    else:
        text, markup = screen(t, view)
        await send(update, context, stacked(note, text), markup)
    updates.answered(mark)
