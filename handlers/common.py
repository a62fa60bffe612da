"""What every handler shares: services, the person writing, and sending rendered replies."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, TelegramObject, Update
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.context import BOT_DATA_KEY, Services
from bot.readcache import ReadCache
from bot.services import updates
from bot.services.campaigns import ContentCache
from bot.services.people import Person, known_person, load_person, person_and_done
from bot.telegram_html import split_message

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
# Distinct keyboards kept built (a few hundred bytes each): lessons and menus repeat for
# every member; the wizard's carry a pledge version, so the oldest are let go.
KEYBOARDS_KEPT = 2048
# The session of the update being handled, so a send can end its transaction first.
_session: ContextVar[AsyncSession | LazyReader | None] = ContextVar(
    "handler_session", default=None
)


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.bot_data[BOT_DATA_KEY]


def content_cache(svc: Services) -> ContentCache:
    """Campaign content (campaigns, deadlines, lessons) kept in memory, one per Services."""
    cache = svc.extras.get("content_cache")
    if cache is None:
        cache = svc.extras["content_cache"] = ContentCache()
    return cache  # type: ignore[return-value]


def read_cache(svc: Services) -> ReadCache:
    """Persons and campaign heads for read-only turns (bot.readcache), one per Services."""
    cache = svc.extras.get("read_cache")
    if cache is None:
        cache = svc.extras["read_cache"] = ReadCache(
            ttl=svc.settings.read_cache_seconds, needs_listener=not svc.db.sqlite
        )
    return cache  # type: ignore[return-value]


def done_marks(svc: Services) -> updates.DoneMarks:
    """The group-committed done marks of read-only updates, one set per Services."""
    marks = svc.extras.get("done_marks")
    if marks is None:
        marks = svc.extras["done_marks"] = updates.DoneMarks(svc.db)
    return marks  # type: ignore[return-value]


class NotOnReader(Exception):
    """A turn asked for on a reader only, for someone the reader cannot serve."""


class LazyReader:
    """A read session opened on first use: a turn answered from the caches (a lesson page
    for a member already known) opens none, where opening and closing one cost it more
    than anything else the project does for it (bench/README)."""

    __slots__ = ("_db", "opened")

    def __init__(self, db: Any) -> None:
        self._db = db
        self.opened: AsyncSession | None = None

    def __getattr__(self, name: str) -> Any:
        # Anything a service asks of the session (exec, get, scalars...) opens it: a
        # service that finds what it needs in a cache never touches it.
        if self.opened is None:
            self.opened = self._db.reader()
        return getattr(self.opened, name)

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.close()


@dataclass
class Turn:
    """One update being handled: the session, the person, and their language."""

    source: AsyncSession | LazyReader
    person: Person
    locale: str
    services: Services

    @property
    def session(self) -> AsyncSession:
        return self.source  # type: ignore[return-value]  # a LazyReader stands in for one

    def render(self, name: str, **ctx: Any) -> str:
        return self.services.renderer.text(name, self.locale, **ctx)

    def label(self, key: str) -> str:
        return button_label(self.services, self.locale, key)


@asynccontextmanager
async def turn(
    update: Update,
    context: ContextTypes.DEFAULT_TYPE,
    *,
    reads_only: bool = False,
    reader_or_nothing: bool = False,
) -> AsyncIterator[Turn]:
    """Open a session and load who is writing (recording their chat identity the first time).

    `reads_only` (a handler that never writes, like /topic): the turn runs on a read session,
    which on SQLite neither takes nor waits for the write lock; a person whose loading needs
    a write (first contact, an unblock) still gets a write session. It takes the person
    from the read cache when it holds them (a turn that then writes does so through SQLite's
    group commit, behind guards that the person is still as read).
    With `reader_or_nothing`, a person the reader cannot serve raises NotOnReader instead:
    that turn would write (and mark the update done) where the caller means only to try.
    """
    svc = services(context)
    user, chat = update.effective_user, update.effective_chat
    assert user is not None and chat is not None
    mark = updates.current()
    if reads_only:
        cache = read_cache(svc)
        key = (CHANNEL, str(user.id))
        person = cache.person(key)
        # A cached person has no database check of the update: the guard dropped a
        # redelivery this process handled (DoneMarks), one handled elsewhere is at worst a
        # lesson shown twice, and a group-path write carries its done mark, which finds it.
        if person is not None and person.identity.blocked_at is None:
            reader = LazyReader(svc.db)
            try:
                with _HandlingIn(reader):
                    yield new_turn(svc, reader, person)
            finally:
                await reader.close()
            return
        generation = cache.generation()
        async with svc.db.reader() as session:
            if person is None:
                person = await _person_unless_done(session, str(user.id), mark)
                member = person.member if person is not None else None
                if member is not None and person.identity.blocked_at is None:
                    cache.put_person(key, member.id, person, generation)
            if person is not None and person.identity.blocked_at is None:
                with _HandlingIn(session):
                    yield new_turn(svc, session, person)
                return
        if reader_or_nothing:
            raise NotOnReader
    person, looked_up = None, False
    if svc.db.sqlite:
        # SQLite has one write connection and every write turn queues for it: reading who
        # is writing on a reader first keeps that read out of the time the queue waits.
        async with svc.db.reader() as session:
            person = await _person_unless_done(session, str(user.id), mark)
        looked_up = True
    async with svc.db.session() as session:
        if person is not None:
            _attach(session, person)
        elif not looked_up:
            person = await _person_unless_done(session, str(user.id), mark)
        if person is None or person.identity.blocked_at is not None:
            person = await load_person(
                session, CHANNEL, str(user.id), str(chat.id), svc.clock.now()
            )
        with _HandlingIn(session):
            yield new_turn(svc, session, person)


def _attach(session: AsyncSession, person: Person) -> None:
    """Make a person read on a reader part of the write session (no query): a service that
    changes them (a language, a link) writes through this session as if it had read them."""
    session.add_all([row for row in (person.identity, person.member, person.unit) if row])


async def _person_unless_done(
    session: AsyncSession, user_id: str, mark: updates.UpdateMark | None
) -> Person | None:
    """Who is writing, read in the same statement as the dedupe check of the update.

    A delivery of an update already done and answered stops here (ApplicationHandlerStop: no
    effect, no reply). One whose first handling died before answering raises
    UpdateAlreadyHandled, and the error handler answers it (handlers.resume). The check is
    only a read: the done mark goes in with the first committed write (bot.services.updates).
    """
    if mark is None:  # not under the update processor (a direct call)
        return await known_person(session, CHANNEL, user_id)
    person, done = await person_and_done(session, CHANNEL, user_id, mark.update_id)
    if done is None:  # an account never seen: ask about the update on its own
        done = await updates.seen_in(session, CHANNEL, mark.update_id)
    if done is updates.Done.no:
        return person
    mark.duplicate = True
    if done is updates.Done.unanswered:
        raise updates.UpdateAlreadyHandled(mark.update_id)
    logger.info("update %s already handled, skipped", mark.update_id)
    raise ApplicationHandlerStop


def new_turn(svc: Services, source: AsyncSession | LazyReader, person: Person) -> Turn:
    """A turn for `person` on a session opened by the caller."""
    locale = person.identity.locale or svc.settings.locale
    return Turn(source=source, person=person, locale=locale, services=svc)


class _HandlingIn:
    """The session of the update being handled, for `end_transaction`, while in the block.

    A class, not a generator-based context manager: every update enters one."""

    def __init__(self, session: AsyncSession | LazyReader) -> None:
        self._session = session

    def __enter__(self) -> None:
        self._token = _session.set(self._session)

    def __exit__(self, *_exc: object) -> None:
        _session.reset(self._token)


async def end_transaction() -> None:
    """Never hold a database transaction across a network call.

    On SQLite every transaction of the write engine holds the write lock (BEGIN IMMEDIATE),
    so a reply waiting out a 429 would stall every other chat. Services commit what they
    mean to keep and check before they change anything, so ending the transaction here only
    closes reads.
    """
    session = _session.get()
    if isinstance(session, LazyReader):
        session = session.opened
    if session is not None and session.in_transaction():
        await session.commit()


def button_label(svc: Services, locale: str, key: str) -> str:
    """Button labels live in the `buttons` template, one `key: label` a line."""
    cache: dict[str, dict[str, str]] = svc.extras.setdefault("labels", {})  # type: ignore[assignment]
    if locale not in cache:
        cache[locale] = svc.renderer.pairs("buttons", locale)
    return cache[locale][key]


@dataclass(frozen=True, slots=True)
class Keyboard:
    """An inline keyboard as the Bot API takes it, serialized once."""

    json: str


# What a reply may carry: an inline keyboard from `keyboard`, or one of PTB's markups (the
# reply keyboard that asks for a phone number, its removal).
Markup = Keyboard | TelegramObject | None


def keyboard(rows: list[list[tuple[str, str]]]) -> Keyboard:
    """Inline keyboard from (label, callback_data) rows."""
    return _keyboard(tuple(tuple(row) for row in rows))


@functools.lru_cache(maxsize=KEYBOARDS_KEPT)
def _keyboard(rows: tuple[tuple[tuple[str, str], ...], ...]) -> Keyboard:
    # A lesson's buttons are the same for every member who reads it: built and serialized
    # once, where PTB would turn the objects into a dict and the dict into JSON every send.
    markup = InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )
    return Keyboard(json.dumps(markup.to_dict()))


async def _post(bot: Bot, endpoint: str, data: dict[str, Any]) -> None:
    """One Bot API call of a reply, whose answer is not read.

    PTB's named methods parse every answer into a `Message` (with its chat, sender and
    keyboard), and on a lesson press that parse was the largest single cost of the update
    (bench/README); no handler reads it. `Bot._post` is the path every named method takes
    (the bot's Defaults, the rate limiter, the request, the same errors), less the parse.
    It is PTB's internal, so it is called from this one place; `do_api_request`, the public
    way, warns for every endpoint PTB names.
    """
    await bot._post(endpoint, data)


def _reply_fields(bot: Bot, text: str, reply_markup: Markup) -> dict[str, Any]:
    markup = reply_markup.json if isinstance(reply_markup, Keyboard) else reply_markup
    parse_mode = bot.defaults.parse_mode if getattr(bot, "defaults", None) else None
    return {"text": text, "parse_mode": parse_mode, "reply_markup": markup}


async def send(
    update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, reply_markup: Markup = None
) -> None:
    """Send to the chat the update came from, split under Telegram's 4096 characters.

    The keyboard goes with the last part, under the text it belongs to.
    """
    chat = update.effective_chat
    assert chat is not None
    await end_transaction()
    parts = split_message(text)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        fields = _reply_fields(context.bot, part, reply_markup if last else None)
        await _post(context.bot, "sendMessage", {"chat_id": chat.id, **fields})


def stacked(*texts: str) -> str:
    """Rendered templates as one message, a blank line apart: one notification on the
    member's phone and one Bot API call (on the deadline day every call counts against the
    bot's send rate), where separate messages would be two of each."""
    return "\n\n".join(texts)


# Answers to an edit that mean the message is no longer there to edit: a new one is sent.
_GONE = ("message to edit not found", "message can't be edited")


async def show(
    update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, reply_markup: Markup = None
) -> None:
    """Answer a button by editing its message in place, or send a new one otherwise."""
    query = update.callback_query
    await end_transaction()
    message = query.message if query is not None else None
    if message is not None and len(split_message(text)) == 1:
        fields = _reply_fields(context.bot, text, reply_markup)
        try:
            await _post(
                context.bot,
                "editMessageText",
                {"chat_id": message.chat.id, "message_id": message.message_id, **fields},
            )
            return
        except BadRequest as error:
            said = str(error).lower()
            if "not modified" in said:
                return
            if not any(gone in said for gone in _GONE):
                raise
    await send(update, context, text, reply_markup)


async def answer_query(update: Update, text: str | None = None, alert: bool = False) -> None:
    """Every pressed button is acknowledged, or the phone keeps spinning."""
    await end_transaction()
    query = update.callback_query
    if query is not None:
        data = {"callback_query_id": query.id, "text": text, "show_alert": alert}
        await _post(query.get_bot(), "answerCallbackQuery", data)


async def staff_flow_button(
    update: Update, context: ContextTypes.DEFAULT_TYPE, flow: str, press_fn
) -> None:
    """One button of a versioned staff flow (/roles, /members, /invite).

    The press is parsed and checked against the flow's saved state, then handed to
    `press_fn(update, context, t, press, state)`. A stale button gets a pop-up; any other
    refusal a message of its own, so it stays in the chat.
    """
    from bot.services import flows
    from bot.services.errors import Refusal

    query = update.callback_query
    assert query is not None and query.data is not None
    async with turn(update, context) as t:
        try:
            press = flows.parse(query.data)
            state = await flows.current(t.session, t.person, flow, press.version)
            await press_fn(update, context, t, press, state)
        except Refusal as refusal:
            text = t.render(refusal.template, **refusal.context)
            if refusal.template == "common/stale_button":
                await answer_query(update, text, alert=True)
                return
            await answer_query(update)
            await send(update, context, text)
