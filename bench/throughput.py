"""Updates per second through the whole Application, against bare PTB echo in the same run.

    python bench/throughput.py [--backend sqlite|postgresql|both] [--users 200] [--runs 5]

The network edge is an in-process ``telegram.request.BaseRequest`` (``CannedRequest``) that
answers every Bot API call with valid canned JSON and never opens a socket, so what is
measured is the bot's own work: PTB's dispatch, the project's handlers, services, database
and templates.

Each run measures three things, in turn, with the same request class, the same
``LaneRateLimiter(per_bot=RATE)`` (a rate far above what is reached, so it never throttles;
the script prints it), the same ``--users`` simulated chats and the same feeding:

* ``echo``: a bare PTB ``Application`` with one ``MessageHandler`` that sends the text back.
  Each user sends text messages.
* ``topic``: the project's Application (``bot.app.build_application``) on a seeded union;
  each joined member sends ``/topic`` and presses every lesson button in turn (the
  ``callback_data`` comes from the keyboard the bot last sent to that chat, as a phone would).
* ``wizard``: each member sends ``/pledge``, types every section and presses submit (the
  deadline is ahead, so every round after the first files a revision).

Updates go in the way the webhook path puts them in: ``application.update_processor
.process_update(update, application.process_update(update))``, each user waiting for the
previous update to finish before sending the next (as a person waits for the reply), all
users at once. The figure is completed updates / wall-clock seconds; the summary gives the
median over ``--runs`` and each mix's ratio to the median echo. It also gives the event
loop's CPU time per update (``time.thread_time`` of the thread running it) and the same
ratios taken from it: everything here runs on that thread but SQLite's own work, so when
the machine is shared that ratio moves far less between runs than the wall-clock one.

The data: the Bình Thuận 2024 campaign applied at the province (tests/factories.py),
``--members`` members (default 20,000) spread over 40 grassroots unions with chat identities
and correct tallies, of whom ``--users`` are the ones writing. SQLite is a file in the
system temp directory; PostgreSQL is the database ``--pg-db`` (default
``bench_perf_throughput``), dropped and created again on the server of ``--pg-url``.
``--profile FILE`` writes cProfile stats of the topic and wizard runs to
``FILE.<backend>.topic`` and ``FILE.<backend>.wizard``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import itertools
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, insert, select
from telegram import InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.ext import (
    Application,
    ApplicationBuilder,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest, RequestData

from bot.app import build_application
from bot.clock import Clock
from bot.db import Database
from bot.models import ChatIdentity, Member
from bot.ratelimit import LaneRateLimiter
from bot.runtime import make_services
from bot.services import tallies
from bot.services.units import add_unit
from bot.settings import Settings
from bot.text import search_key
from tests import factories

TOKEN = "123456789:BENCH-token-never-sent-anywhere"
BOT_ID = 123456789
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Chuyên đề", "username": "chuyende_bot"}
# Inside the 2024 campaign, before the pledge deadline (as the tests' clock).
START = datetime(2024, 4, 5, 1, 0, tzinfo=UTC)
RATE = 1e6  # per-bot messages/s for both sides: far above anything reached here
USER_BASE = 7_000_000


class CannedRequest(BaseRequest):
    """The Bot API answered in process: valid JSON for what the bot calls, no network.

    It remembers the last message sent or edited in each chat, so a simulated user can
    press a button of the keyboard it was last shown.
    """

    def __init__(self) -> None:
        self._message_ids = itertools.count(1)
        self.last: dict[int, dict[str, Any]] = {}
        self.calls = 0
        # When a list: each update fed appends a list, and every call goes into the last one
        # (set only while one user is fed, so the calls are that user's).
        self.recording: list[list[tuple[str, dict[str, Any]]]] | None = None

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    @property
    def read_timeout(self) -> float | None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        self.calls += 1
        endpoint = url.rsplit("/", 1)[-1]
        params = request_data.parameters if request_data is not None else {}
        if self.recording is not None and endpoint not in ("getMe", "setMyCommands"):
            self.recording[-1].append((endpoint, dict(params)))
        result: Any = True
        if endpoint == "getMe":
            result = {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                      "supports_inline_queries": False}
        elif endpoint in ("sendMessage", "editMessageText"):
            chat_id = int(params["chat_id"])
            message_id = (
                int(params["message_id"]) if endpoint == "editMessageText"
                else next(self._message_ids)
            )
            result = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private", "first_name": "Member"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
            if params.get("reply_markup"):
                markup = params["reply_markup"]
                result["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
            self.last[chat_id] = result
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def buttons(self, chat_id: int) -> list[str]:
        """The callback_data of the last keyboard shown in this chat, in order."""
        markup = self.last.get(chat_id, {}).get("reply_markup") or {}
        return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row
                if "callback_data" in b]


class Feeder:
    """Builds updates from simulated users and puts them through an Application."""

    def __init__(self, application: Application, request: CannedRequest) -> None:
        self.app = application
        self.request = request
        self._update_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)
        self._message_ids = itertools.count(1)
        self.done = 0

    def _user(self, uid: int) -> dict[str, Any]:
        return {"id": uid, "is_bot": False, "first_name": "Member", "language_code": "vi"}

    async def _feed(self, payload: dict[str, Any]) -> None:
        payload["update_id"] = next(self._update_ids)
        if self.request.recording is not None:
            self.request.recording.append([])
        update = Update.de_json(payload, self.app.bot)
        await self.app.update_processor.process_update(update, self.app.process_update(update))
        self.done += 1

    async def text(self, uid: int, text: str) -> None:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": uid, "type": "private", "first_name": "Member"},
            "from": self._user(uid),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        await self._feed({"message": message})

    async def press(self, uid: int, data: str) -> None:
        shown = self.request.last.get(uid)
        assert shown is not None, "pressing a button in a chat the bot never wrote to"
        await self._feed(
            {
                "callback_query": {
                    "id": str(next(self._message_ids)),
                    "from": self._user(uid),
                    "chat_instance": str(uid),
                    "data": data,
                    "message": shown,
                }
            }
        )


def _pick(buttons: list[str], prefix: str) -> str:
    found = [b for b in buttons if b.startswith(prefix)]
    assert found, f"no {prefix!r} button in {buttons}"
    return found[0]


async def echo_user(feeder: Feeder, uid: int, rounds: int) -> None:
    for n in range(rounds * 30):
        await feeder.text(uid, f"Tin nhắn số {n}")


async def topic_user(feeder: Feeder, uid: int, rounds: int) -> None:
    for _ in range(rounds):
        await feeder.text(uid, "/topic")
        data = _pick(feeder.request.buttons(uid), "tp:")
        while True:
            await feeder.press(uid, data)
            following = [b for b in feeder.request.buttons(uid) if b.startswith("tp:")]
            position = int(data[3:])
            ahead = [b for b in following if int(b[3:]) > position]
            if not ahead:
                break
            data = ahead[0]


SECTION_TEXT = "Tôi sẽ học tập và làm theo tấm gương đạo đức Hồ Chí Minh mỗi ngày, phần {n}."


async def wizard_user(feeder: Feeder, uid: int, rounds: int) -> None:
    for _ in range(rounds):
        await feeder.text(uid, "/pledge")
        while not any(b.startswith("pl:submit:") for b in feeder.request.buttons(uid)):
            await feeder.text(uid, SECTION_TEXT.format(n=feeder.done % 97))
        await feeder.press(uid, _pick(feeder.request.buttons(uid), "pl:submit:"))
        assert "pl:" not in "".join(feeder.request.buttons(uid)), "the pledge was not filed"


class RoundTrips:
    """Statements sent to the database (commits and rollbacks included): the part of an
    update's cost that does not move with the machine's load."""

    def __init__(self, db: Database) -> None:
        self._counted = 0
        # The grouped reads and group commits run their statements on the driver directly.
        self.batches = [db.read_batch, db.write_batch]
        for engine in {db.engine, db.read_engine}:
            event.listen(engine.sync_engine, "before_cursor_execute", self._one)
            event.listen(engine.sync_engine, "commit", self._one)
            event.listen(engine.sync_engine, "rollback", self._one)

    def _one(self, *_args) -> None:
        self._counted += 1

    @property
    def count(self) -> int:
        return self._counted + sum(batch.statements for batch in self.batches)


async def run_mix(application: Application, request: CannedRequest, user, uids, rounds,
                  profile: cProfile.Profile | None = None,
                  trips: RoundTrips | None = None) -> tuple[float, int, float, float]:
    """Updates/s, updates, database statements per update, and the event loop's CPU
    microseconds per update (its thread's CPU time: what the machine's other load does
    not move, where the wall clock does)."""
    feeder = Feeder(application, request)
    before = trips.count if trips is not None else 0
    if profile is not None:
        profile.enable()
    began, cpu_began = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(user(feeder, uid, rounds) for uid in uids))
    elapsed, cpu = time.perf_counter() - began, time.thread_time() - cpu_began
    if profile is not None:
        profile.disable()
    statements = (trips.count - before) / feeder.done if trips is not None else 0.0
    return feeder.done / elapsed, feeder.done, statements, cpu / feeder.done * 1e6


# -- the applications ------------------------------------------------------------------------


def bare_builder(request: CannedRequest, concurrency: int) -> ApplicationBuilder:
    """A bare PTB Application on the canned transport, with the project's rate limiter."""
    return (
        ApplicationBuilder()
        .token(TOKEN)
        .request(request)
        .rate_limiter(LaneRateLimiter(per_bot=RATE))
        .concurrent_updates(concurrency)
    )


def echo_application(request: CannedRequest, concurrency: int) -> Application:
    async def echo(update: Update, context) -> None:
        await context.bot.send_message(update.effective_chat.id, update.effective_message.text)

    application = bare_builder(request, concurrency).build()
    application.add_handler(MessageHandler(filters.TEXT, echo))
    return application


def _snake(endpoint: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", endpoint).lower()


class Replay:
    """A bare PTB handler that makes the Bot API calls the project made for one user's mix.

    Recorded from the project's bot, update by update; played back in order per chat, with
    the keyboards built once. It has no database, no templates and no rules, so it costs what
    PTB itself costs for those calls and payloads: the ceiling for the project on this
    transport.
    """

    def __init__(self, recording: list[list[tuple[str, dict[str, Any]]]], bot) -> None:
        self.steps = [[self._prepared(endpoint, params, bot) for endpoint, params in calls]
                      for calls in recording]
        self.position: dict[int, int] = collections.defaultdict(int)

    @staticmethod
    def _prepared(endpoint: str, params: dict[str, Any], bot):
        kwargs = {k: v for k, v in params.items() if k not in ("chat_id", "callback_query_id")}
        markup = kwargs.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        if markup is not None:
            kwargs["reply_markup"] = InlineKeyboardMarkup.de_json(markup, bot)
        return getattr(bot, _snake(endpoint)), endpoint, kwargs

    async def __call__(self, update: Update, context) -> None:
        chat_id = update.effective_chat.id
        n = self.position[chat_id]
        self.position[chat_id] = n + 1
        for method, endpoint, kwargs in self.steps[n % len(self.steps)]:
            if endpoint == "answerCallbackQuery":
                await method(update.callback_query.id, **kwargs)
            else:
                await method(chat_id=chat_id, **kwargs)


def replay_application(request: CannedRequest, concurrency: int,
                       recording: list[list[tuple[str, dict[str, Any]]]]) -> Application:
    application = (
        bare_builder(request, concurrency).defaults(Defaults(parse_mode=ParseMode.HTML)).build()
    )
    application.add_handler(TypeHandler(Update, Replay(recording, application.bot)))
    return application


async def recorded(project: Application, request: CannedRequest, user, uid: int):
    """The Bot API calls the project makes for each update of one round of `user`'s mix."""
    request.recording = []
    try:
        await run_mix(project, request, user, [uid], 1)
        return request.recording
    finally:
        request.recording = None


async def started(application: Application) -> Application:
    await application.initialize()
    if application.post_init:
        await application.post_init(application)
    await application.start()
    return application


async def stopped(application: Application) -> None:
    await application.stop()
    await application.shutdown()
    if application.post_shutdown:
        await application.post_shutdown(application)


# -- the data --------------------------------------------------------------------------------


async def seed(svc, members: int, users: int) -> list[int]:
    """The union, members with identities, correct tallies; the writing users' ids."""
    async with svc.db.session() as session:
        union = await factories.make_union(session, svc)
        units = [union.school, union.factory]
        for n in range(38):
            units.append(await add_unit(session, f"CS{n:02d}", f"CĐCS Doanh nghiệp số {n}", "PT"))
        now = svc.clock.now()
        conn = await session.connection()
        rows = []
        for n in range(members):
            name = f"Nguyễn Văn Thành {n}"
            rows.append({"unit_id": units[n % len(units)].id, "full_name": name,
                         "name_key": search_key(name), "phone": f"09{n:08d}",
                         "created_at": now, "active": True})
        for start in range(0, members, 5000):
            await conn.execute(insert(Member), rows[start:start + 5000])
        ids = list((await conn.execute(
            select(Member.id).order_by(Member.id))).scalars())
        identities = [{"channel": "telegram", "external_user_id": str(USER_BASE + n),
                       "chat_id": str(USER_BASE + n), "member_id": member_id,
                       "consent_at": now, "created_at": now}
                      for n, member_id in enumerate(ids)]
        for start in range(0, len(identities), 5000):
            await conn.execute(insert(ChatIdentity), identities[start:start + 5000])
        await tallies.recount(session, [u.id for u in units])
        await session.commit()
    await svc.db.analyze()
    return [USER_BASE + n for n in range(users)]


async def pg_database(server_url: str, name: str) -> str:
    """Drop and create `name` on the server of `server_url`; its URL for SQLAlchemy."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


# -- the runs --------------------------------------------------------------------------------


async def bench_backend(backend: str, args) -> dict[str, list[float]]:
    if backend == "sqlite":
        path = Path(tempfile.gettempdir()) / "chuyende_bench_throughput.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = await pg_database(args.pg_url, args.pg_db)
    settings = Settings(
        TELEGRAM_BOT_TOKEN=TOKEN, DATABASE_URL=url, CHUYENDE_LOCALE="vi",
        CHUYENDE_BACKGROUND=False, CHUYENDE_PER_BOT_RATE=RATE, _env_file=None,
    )
    db = Database(url)
    await db.create_all()
    svc = make_services(settings, clock=Clock(settings.tz, start=START), db=db)
    svc.owns_db = False
    began = time.perf_counter()
    uids = await seed(svc, args.members, args.users)
    print(f"[{backend}] seeded {args.members} members in {time.perf_counter() - began:.1f} s")

    request = CannedRequest()
    project = await started(build_application(svc, request=request))
    echo_request = CannedRequest()
    # The same number of updates in flight as the project's processor allows.
    concurrency = project.update_processor.max_concurrent_updates
    echo = await started(echo_application(echo_request, concurrency))
    profiles = {mix: cProfile.Profile() for mix in ("topic", "wizard")} if args.profile else {}
    figures: dict[str, list[float]] = {
        "echo": [], "topic": [], "wizard": [], "bare_topic": [], "bare_wizard": [],
        "topic_statements": [], "wizard_statements": [],
    }
    figures.update({f"{mix}_cpu": [] for mix in ("echo", "topic", "wizard", "bare_topic",
                                                  "bare_wizard")})
    bare: dict[str, Application] = {}
    bare_requests: dict[str, CannedRequest] = {}
    trips = RoundTrips(db)
    try:
        # Warm up: templates compiled, statements cached, connections opened.
        await run_mix(echo, echo_request, echo_user, uids, 1)
        await run_mix(project, request, topic_user, uids, 1)
        await run_mix(project, request, wizard_user, uids, 1)
        for mix, user in (("topic", topic_user), ("wizard", wizard_user)):
            bare_request = CannedRequest()
            recording = await recorded(project, request, user, uids[0])
            bare[mix] = await started(replay_application(bare_request, concurrency, recording))
            bare_requests[mix] = bare_request
            await run_mix(bare[mix], bare_request, user, uids, 1)
        for run in range(args.runs):
            row = []
            for mix, app, req, user in (
                ("echo", echo, echo_request, echo_user),
                ("topic", project, request, topic_user),
                ("bare_topic", bare["topic"], bare_requests["topic"], topic_user),
                ("wizard", project, request, wizard_user),
                ("bare_wizard", bare["wizard"], bare_requests["wizard"], wizard_user),
            ):
                rate, count, statements, cpu = await run_mix(
                    app, req, user, uids, args.rounds, profiles.get(mix),
                    trips if mix in ("topic", "wizard") else None,
                )
                figures[mix].append(rate)
                figures[f"{mix}_cpu"].append(cpu)
                if mix in ("topic", "wizard"):
                    figures[f"{mix}_statements"].append(statements)
                row.append(f"{mix} {rate:7.0f}/s ({count} updates)")
            print(f"[{backend}] run {run + 1}: " + ", ".join(row))
        for name, batch in (("grouped reads", db.read_batch), ("group commits", db.write_batch)):
            if batch.batches:
                print(f"[{backend}] {name}: {batch.turns} wizard steps in {batch.batches} "
                      f"transactions, {batch.turns / batch.batches:.1f} per transaction")
        if db.write_batch.turns:
            print(f"[{backend}] lost races (redone on the ORM path): {db.write_batch.lost_races}")
        if not db.sqlite:
            print(f"[{backend}] pipelined batches undone and run again turn by turn: "
                  f"{db.write_batch.sent['redone']}")
    finally:
        await stopped(project)
        await stopped(echo)
        for application in bare.values():
            await stopped(application)
        await db.dispose()
    for mix, profile in profiles.items():
        out = f"{args.profile}.{backend}.{mix}"
        profile.dump_stats(out)
        print(f"[{backend}] {mix} profile written to {out}")
    return figures


def summary(backend: str, figures: dict[str, list[float]]) -> None:
    echo = statistics.median(figures["echo"])
    echo_cpu = statistics.median(figures["echo_cpu"])
    print(f"[{backend}] medians over {len(figures['echo'])} runs:")
    print(f"  echo   {echo:8.0f} updates/s, event loop {echo_cpu:6.0f} µs CPU/update")
    for mix, goal in (("topic", 0.5), ("wizard", 0.2)):
        value = statistics.median(figures[mix])
        ratio = value / echo
        verdict = "meets" if ratio >= goal else "below"
        statements = statistics.median(figures[f"{mix}_statements"])
        print(f"  {mix:6s} {value:8.0f} updates/s = {ratio:6.1%} of echo "
              f"({verdict} the {goal:.0%} goal), {statements:.1f} database statements/update")
        ceiling = statistics.median(figures[f"bare_{mix}"])
        print(f"    bare PTB replaying the same calls: {ceiling:8.0f} updates/s = "
              f"{ceiling / echo:6.1%} of echo; the project is at {value / ceiling:6.1%} of it")
        cpu, bare_cpu = (statistics.median(figures[f"{name}_cpu"]) for name in (mix, f"bare_{mix}"))
        print(f"    event loop CPU/update: {cpu:6.0f} µs (echo/{mix} = {echo_cpu / cpu:6.1%}), "
              f"bare replay {bare_cpu:6.0f} µs (echo/replay = {echo_cpu / bare_cpu:6.1%})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mix per user")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg-url", default=os.environ.get(
        "BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--pg-db", default="bench_perf_throughput")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"rate limiter: LaneRateLimiter(per_bot={RATE:g}/s) on both sides; "
          f"{args.users} users, {args.members} members, {args.rounds} rounds a run")
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = {}
    for backend in backends:
        try:
            results[backend] = await bench_backend(backend, args)
        except OSError as error:  # PostgreSQL not reachable
            print(f"[{backend}] skipped: {error}")
    for backend, figures in results.items():
        summary(backend, figures)


if __name__ == "__main__":
    asyncio.run(main())
