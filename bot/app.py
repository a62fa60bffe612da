"""Builds the python-telegram-bot Application and owns its services' lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import BotCommand, Update
from telegram.constants import ParseMode
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    TypeHandler,
    Updater,
    filters,
)
from telegram.request import BaseRequest

from bot import heap
from bot.context import BOT_DATA_KEY, Services
from bot.ratestore import limiter_for
from bot.update_processor import PerChatUpdateProcessor
from handlers import (
    broadcast,
    guards,
    invite,
    members,
    pending,
    pledge,
    reminders,
    review,
    roles,
    roster,
    router,
    start,
    summary,
    topic,
)

logger = logging.getLogger(__name__)

# Commands shown in Telegram's menu, in this order; descriptions come from a template.
MENU_COMMANDS = (
    "start",
    "topic",
    "pledge",
    "mypledge",
    "reminders",
    "help",
    "language",
    "cancel",
)
# How long stopping waits for the polling loop. A normal stop takes one short getUpdates (the
# confirm of what was fetched); PTB's pause after a failed poll (up to 30 s, or a 429's
# retry_after) is not waited out, so compose's and systemd's 30 s leave room for the flush.
UPDATER_STOP_S = 5.0


class BotApplication(Application):
    """PTB's Application without the bookkeeping of a persistence this bot does not have.

    PTB 22 adds the chat id and the user id of every update it processes to two sets, and
    only a persistence's periodic write empties them. Without one, they keep every member
    ever seen: 130-270 bytes each (in bench/memory.py, the slow climb of malloc's memory and
    the 4 MB step when both set tables grew at ~20,000 members). The bot's state is in its
    database, so nothing is marked.
    """

    def _mark_for_persistence_update(self, *, update: object | None = None, job=None) -> None:
        if self.persistence is not None:
            super()._mark_for_persistence_update(update=update, job=job)


def build_application(
    svc: Services, request: BaseRequest | None = None, updates_request: BaseRequest | None = None
) -> Application:
    """The Application, wired with every handler; `request` is the network seam in tests."""
    token = svc.settings.telegram_bot_token
    if token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .application_class(BotApplication)
        .token(token.get_secret_value())
        .base_url(svc.settings.bot_api_url)
        .base_file_url(svc.settings.bot_file_url)
        .defaults(Defaults(parse_mode=ParseMode.HTML, tzinfo=svc.clock.tz))
        .rate_limiter(limiter_for(svc.settings))
        .concurrent_updates(PerChatUpdateProcessor())
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
    )
    if request is not None:
        builder = builder.request(request)
    if updates_request is not None:
        builder = builder.get_updates_request(updates_request)
    application = builder.build()
    application.bot_data[BOT_DATA_KEY] = svc
    add_handlers(application)
    return application


def add_handlers(application: Application) -> None:
    private = filters.ChatType.PRIVATE
    application.add_handler(TypeHandler(Update, guards.drop_repeated_update), group=-2)
    application.add_handler(TypeHandler(Update, guards.private_only), group=-1)
    application.add_handlers(
        [
            CommandHandler("start", start.start, filters=private),
            CommandHandler("help", start.help_command, filters=private),
            CommandHandler("cancel", start.cancel, filters=private),
            CommandHandler("language", start.language, filters=private),
            CommandHandler("topic", topic.topic, filters=private),
            CommandHandler("pledge", pledge.pledge, filters=private),
            CommandHandler("mypledge", pledge.my_pledge, filters=private),
            CommandHandler("reminders", reminders.reminders, filters=private),
            CommandHandler("pending", pending.pending, filters=private),
            CommandHandler("invite", invite.invite_command, filters=private),
            CommandHandler("members", members.members_command, filters=private),
            CommandHandler("roles", roles.roles_command, filters=private),
            CommandHandler("enterpledge", review.enter_pledge, filters=private),
            CommandHandler("broadcast", broadcast.broadcast, filters=private),
            CommandHandler("summary", summary.summary_command, filters=private),
            ChatMemberHandler(reminders.chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
            CallbackQueryHandler(start.consent, pattern=r"^cs:"),
            CallbackQueryHandler(start.language_chosen, pattern=r"^lang:"),
            CallbackQueryHandler(topic.lesson_page, pattern=r"^tp:"),
            CallbackQueryHandler(reminders.reminders_button, pattern=r"^rm:"),
            CallbackQueryHandler(pledge.pledge, pattern=r"^pl:open$"),
            CallbackQueryHandler(pledge.wizard_button, pattern=r"^pl:"),
            CallbackQueryHandler(roles.button, pattern=r"^rl:"),
            CallbackQueryHandler(members.button, pattern=r"^mb:"),
            CallbackQueryHandler(invite.button, pattern=r"^iv:"),
            CallbackQueryHandler(review.button, pattern=r"^rv:"),
            CallbackQueryHandler(broadcast.button, pattern=r"^bc:"),
            CallbackQueryHandler(summary.button, pattern=r"^sm:"),
            CallbackQueryHandler(roster.button, pattern=r"^ro:"),
            CallbackQueryHandler(guards.unknown_button),
            MessageHandler(private & filters.CONTACT, start.contact),
            MessageHandler(private & filters.Document.ALL, summary.document),
            MessageHandler(private & filters.COMMAND, start.help_command),
            MessageHandler(private & filters.TEXT, router.text),
            MessageHandler(private & ~filters.StatusUpdate.ALL, router.not_text),
        ]
    )
    application.add_error_handler(guards.on_error)


def menu_commands(svc: Services, locale: str) -> list[BotCommand]:
    """The command menu with descriptions from the `commands` template (`name: text` lines)."""
    described = svc.renderer.pairs("commands", locale)
    return [BotCommand(name, described[name]) for name in MENU_COMMANDS]


async def _post_init(application: Application) -> None:
    """Register the command menu: Vietnamese for everyone, English for English phones."""
    svc: Services = application.bot_data[BOT_DATA_KEY]
    await application.bot.set_my_commands(menu_commands(svc, svc.settings.locale))
    other = "en" if svc.settings.locale == "vi" else "vi"
    await application.bot.set_my_commands(menu_commands(svc, other), language_code=other)
    if not svc.db.sqlite:  # other processes write too: hear of it, or the cache stays off
        from bot.cachebus import CacheBus
        from handlers.common import read_cache

        bus = svc.extras["cache_bus"] = CacheBus(svc.db.url, read_cache(svc))
        await bus.start()
    if svc.settings.background:
        from scheduler.setup import start_background

        await start_background(application)
    heap.settle()
    svc.extras["heap_release"] = asyncio.create_task(heap.release_forever())


async def _post_shutdown(application: Application) -> None:
    from scheduler.setup import stop_background

    await stop_background(application)
    svc: Services = application.bot_data[BOT_DATA_KEY]
    release = svc.extras.pop("heap_release", None)
    if isinstance(release, asyncio.Task):
        release.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await release
    bus = svc.extras.pop("cache_bus", None)
    if bus is not None:
        await bus.stop()  # type: ignore[attr-defined]
    svc.extras.pop("read_cache", None)  # a bot started again starts from the database
    marks = svc.extras.get("done_marks")
    if marks is not None:  # the read-only updates' done marks still waiting for company
        await marks.close()  # type: ignore[attr-defined]
    if svc.owns_db:
        await svc.db.dispose()


@asynccontextmanager
async def polling(
    application: Application, poll_timeout: int = 10, stop_within: float = UPDATER_STOP_S
) -> AsyncIterator[Application]:
    """Run inside an already running event loop, with the lifecycle `run_polling` would give.

    PTB calls post_init/post_shutdown only from run_polling/run_webhook, which own the loop;
    `chuyende run`, the sandbox and the tests come through here, so stopping is bounded.
    """
    await application.initialize()
    if application.post_init:
        await application.post_init(application)
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(poll_interval=0, timeout=poll_timeout)
    try:
        yield application
    finally:
        await _stop_updater(application.updater, stop_within)
        await application.stop()
        await application.shutdown()
        if application.post_shutdown:
            await application.post_shutdown(application)


async def _stop_updater(updater: Updater, within: float) -> None:
    """Stop polling, without waiting out PTB's pause after a failed getUpdates.

    PTB 22 sleeps between retries (1.5x each time up to 30 s, or a 429's retry_after) and
    `Updater.stop()` waits for that sleep. Past `within`, the stop is cancelled, which cancels
    the polling task it awaits, asleep in that pause. Updates fetched but not confirmed come
    again on the next start, and the done marks drop the ones already handled.
    """
    stopping = asyncio.ensure_future(updater.stop())
    done, _ = await asyncio.wait({stopping}, timeout=within)
    if not done:
        logger.warning("polling still in its retry pause after %.1f s: cut short", within)
        stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopping


async def serve_polling(application: Application) -> None:
    """`chuyende run`: long-poll until SIGTERM or SIGINT, then finish what is in flight and stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = (signal.SIGTERM, signal.SIGINT)
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with polling(application):
            await stop.wait()
            logger.info("stop signal received: finishing the updates in flight")
            # A second signal ends the process at once, as without these handlers.
            for sig in handled:
                loop.remove_signal_handler(sig)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
