"""Pre-filters run before any feature handler (negative groups, as in rules-bot)."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.services import updates
from handlers.common import CHANNEL, done_marks, send, services
from handlers.resume import answer_if_lost

logger = logging.getLogger(__name__)


async def drop_repeated_update(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Telegram may deliver an update twice; only the first delivery has an effect.

    Here the update starts being handled: the first committed write will carry its done
    mark (bot.services.updates). A delivery of one done moments ago stops here; otherwise
    the check is a read in the handler's first statement (`handlers.common.turn`).
    """
    svc = services(context)
    marks = done_marks(svc)
    if marks.holds(CHANNEL, update.update_id):
        logger.info("update %s already handled, skipped", update.update_id)
        raise ApplicationHandlerStop
    updates.handling(CHANNEL, update.update_id, svc.clock.now(), marks)


async def private_only(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In a group the bot shows nothing personal: it asks to be messaged privately."""
    chat = update.effective_chat
    if chat is None or chat.type == ChatType.PRIVATE:
        return
    message = update.effective_message
    is_command = bool(message and message.text and message.text.startswith("/"))
    if update.callback_query is not None:
        await update.callback_query.answer()
    if is_command or update.callback_query is not None:
        svc = services(context)
        text = svc.renderer.text(
            "common/private_only", svc.settings.locale, bot_username=context.bot.username
        )
        await send(update, context, text)
    raise ApplicationHandlerStop


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure (the log filter strips tokens) and tell the person nothing was lost."""
    if isinstance(context.error, updates.UpdateAlreadyHandled):
        # Another delivery of the same update committed first; this one changed nothing. If
        # that one never answered (its process died), this one does.
        if isinstance(update, Update):
            try:
                await answer_if_lost(update, context)
            except Exception:  # the answer failed too: the next message gets the screen
                logger.warning("could not answer a redelivered update", exc_info=True)
        return
    updates.handler_failed()
    logger.error("handler failed", exc_info=context.error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    svc = services(context)
    try:
        if update.callback_query is not None:
            await update.callback_query.answer()
        text = svc.renderer.text("common/error", svc.settings.locale)
        await context.bot.send_message(update.effective_chat.id, text)
    except Exception:  # the apology itself failed (network): the log above has the cause
        logger.warning("could not send the error notice", exc_info=True)


async def unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button whose data no handler knows: forged or from an old version of the bot."""
    svc = services(context)
    assert update.callback_query is not None
    await update.callback_query.answer(
        svc.renderer.text("common/stale_button", svc.settings.locale), show_alert=True
    )
