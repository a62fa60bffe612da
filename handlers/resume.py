"""An update whose effects were stored by a process that died before it answered.

Telegram delivers it again, and it must not be handled twice (bot.services.updates). But
silence would leave the member waiting, and a member who types their answer again would
file it under the next section. So the redelivery gets an answer of its own: their message
was kept, and here is where they are (the wizard's screen, or the way to their pledge).
"""

from __future__ import annotations

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


async def answer_if_lost(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """For a duplicate delivery: answer it when the first one never does."""
    mark = updates.current()
    if mark is None or update.effective_user is None or update.effective_chat is None:
        return
    svc = services(context)
    if await updates.answered_within_grace(svc.db, done_marks(svc), mark):
        logger.info("update %s handled by another delivery, skipped", mark.update_id)
        return
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
