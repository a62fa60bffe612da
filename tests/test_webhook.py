"""Webhook mode end to end: the real Application behind the Starlette endpoint, the emulator
POSTing updates to it like Telegram, and `chuyende run --webhook` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from typer.testing import CliRunner

from bot.app import build_application
from bot.cli import app as cli_app
from bot.db import Database
from bot.models import Pledge, PledgeStatus, ProcessedUpdate
from bot.runtime import make_services
from bot.settings import Settings
from bot.webhook import SECRET_HEADER, WebhookServer, webhook_running
from scheduler.notices import plan_tick
from tests import factories
from tests.conftest import TOKEN, bot_settings
from tests.dialog import label, press, say

SECRET = "wh-secret_for-tests-0123456789"
URL = "https://bot.example.org/tg/hook"
ANSWERS = ["Làm theo Bác.", "Sống giản dị.", "Lắng nghe.", "Công khai kế hoạch lớp."]


def _settings(emulator, database_url: str) -> Settings:
    return bot_settings(emulator, database_url, CHUYENDE_WEBHOOK_SECRET=SECRET)


@pytest.fixture
def settings(emulator, database_url: str) -> Settings:
    return _settings(emulator, database_url)


@pytest.fixture
async def hook(svc, emulator):
    """The real Application served by webhook on a free port; the emulator delivers to it."""
    svc.owns_db = False
    async with webhook_running(WebhookServer(build_application(svc), URL)) as server:
        emulator.route_webhook([server.url], retry_delay=0.05)
        yield server


async def _member(svc, union, user_id: int, name: str = "Nguyễn Thị Lan"):
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, name, f"+849121{user_id:05d}"
        )
        await factories.link(session, svc, member, user_id)
    return member


async def _processed(svc) -> int:
    """Updates marked done; read-only ones are marked in batches, so flush those first."""
    from handlers.common import done_marks

    await done_marks(svc).flush()
    async with svc.db.reader() as session:
        return len((await session.exec(select(ProcessedUpdate))).all())


def _message_update(emulator, user_id: int, text: str) -> dict:
    user = emulator.user(user_id, started=True)
    return {
        "update_id": 4242,
        "message": {
            "message_id": 1,
            "date": 1712278800,
            "chat": {"id": user_id, "type": "private", "first_name": user.first_name},
            "from": user.to_json(),
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
        },
    }


async def _metrics(server) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{server.host}:{server.port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The conversation, and what the endpoint refuses
# ---------------------------------------------------------------------------------------------


async def test_a_member_files_a_pledge_by_webhook(svc, emulator, union, hook):
    member = await _member(svc, union, 601)
    lan = emulator.user(601, first_name="Lan")
    said = await say(svc, lan, "/pledge")
    assert said.templates == ["pledge/intro", "pledge/step"]
    for answer in ANSWERS:
        said = await say(svc, lan, answer)
    assert said.templates == ["pledge/saved", "pledge/review"]
    said = await press(svc, lan, label(svc, "submit"))
    assert said.templates == ["pledge/submitted"]

    async with svc.db.reader() as session:
        [pledge] = (await session.exec(select(Pledge))).all()
    assert (pledge.member_id, pledge.status) == (member.id, PledgeStatus.submitted)
    # Every update came by POST and got its 200 at the first try; nothing was polled.
    assert emulator.stats["getUpdates"] == 0
    assert len(emulator.webhook_attempts) == 6
    assert all(a.status == 200 for a in emulator.webhook_attempts)
    assert emulator.webhook["secret_token"] == SECRET
    info = await hook.webhook.application.bot.get_webhook_info()
    assert (info.url, info.pending_update_count, info.last_error_message) == (URL, 0, None)


@pytest.mark.parametrize("header", [None, "wrong-secret", SECRET + "x", ""])
async def test_a_request_without_the_right_secret_is_refused_and_nothing_is_handled(
    svc, emulator, union, hook, header
):
    await _member(svc, union, 602)
    headers = {} if header is None else {SECRET_HEADER: header}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            hook.url, json=_message_update(emulator, 602, "/start"), headers=headers
        )
    assert response.status_code == 403
    await asyncio.sleep(0.2)
    assert await _processed(svc) == 0
    assert emulator.deliveries == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'{"message": {"text": "no update_id"}}',
        b'{"update_id": "7", "message": {}}',
        b'{"update_id": 7, "message": {"text": "no chat, no date"}}',
        "\u00ff".encode("latin-1"),
    ],
)
async def test_a_body_that_is_not_an_update_gets_400_and_the_next_one_is_served(
    svc, emulator, union, hook, body
):
    await _member(svc, union, 603)
    async with httpx.AsyncClient() as client:
        bad = await client.post(hook.url, content=body, headers={SECRET_HEADER: SECRET})
        assert bad.status_code == 400
        assert await _processed(svc) == 0 and emulator.deliveries == []
        good = await client.post(
            hook.url, json=_message_update(emulator, 603, "/start"), headers={SECRET_HEADER: SECRET}
        )
    assert good.status_code == 200
    # The 200 came after the processing: the reply is already at Telegram.
    assert [d.chat_id for d in emulator.deliveries] == [603]
    assert await _processed(svc) == 1


async def test_the_200_comes_only_after_the_reply_was_sent(svc, emulator, union, hook):
    await _member(svc, union, 604)
    lan = emulator.user(604, first_name="Lan")
    emulator.set_send_delay(0.3, methods=["sendMessage"])  # a slow Telegram
    await say(svc, lan, "/help")
    await emulator.wait_idle(timeout=10)
    [attempt] = emulator.webhook_attempts
    [reply] = [d for d in emulator.deliveries if d.chat_id == 604]
    assert attempt.status == 200
    assert attempt.started < reply.monotonic <= attempt.finished
    assert attempt.finished - attempt.started >= 0.3


# ---------------------------------------------------------------------------------------------
# Redelivery, and a database that is down
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def failing_target():
    """A local server answering 500 to everything (a broken replica behind the balancer)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    hits: list[int] = []

    async def fail(request):
        hits.append(json.loads(await request.body())["update_id"])
        return PlainTextResponse("boom", status_code=500)

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/tg/hook", fail, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="off",
        )
    )
    server.capture_signals = _no_signals  # the test process keeps its own signal handlers
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/tg/hook", hits
    server.should_exit = True
    await task


def _no_signals():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("broken", ["refused", "500"])
async def test_an_update_a_target_did_not_take_is_handled_once_by_the_other(
    svc, emulator, union, hook, failing_target, broken
):
    bad_url, hits = failing_target
    if broken == "refused":
        bad_url, hits = f"http://127.0.0.1:{_free_port()}/tg/hook", None
    emulator.route_webhook([bad_url, hook.url], retry_delay=0.05)
    people = []
    for index in range(4):
        await _member(svc, union, 610 + index, f"Thành viên {index}")
        people.append(emulator.user(610 + index, first_name=f"TV{index}"))
    sent = []
    for round_ in range(3):
        for person in people:
            sent.append(await person.send("/help" if round_ % 2 == 0 else "xin chào"))
    await emulator.wait_idle(timeout=20)

    # Each person got exactly one reply per message, in the order they wrote.
    for person in people:
        replies = [m for m in person.transcript if m.from_bot]
        assert len(replies) == 3, person.transcript_text()
    assert await _processed(svc) == len(sent)
    failed = [a for a in emulator.webhook_attempts if not a.ok]
    succeeded = [a for a in emulator.webhook_attempts if a.ok]
    assert failed and all(a.target == bad_url for a in failed)
    assert sorted(a.update_id for a in succeeded) == sorted(sent)
    assert all(a.target == hook.url for a in succeeded)
    if hits is not None:
        assert sorted(hits) == sorted(a.update_id for a in failed)
    info = await hook.webhook.application.bot.get_webhook_info()
    assert info.pending_update_count == 0
    expected = (
        "Connection refused" if broken == "refused" else "Wrong response from the webhook: 500"
    )
    assert info.last_error_message.startswith(expected)
    assert info.last_error_date is not None


def _dead_database(database_url: str, tmp_path: Path) -> str:
    """A database URL nothing answers at, of the same kind as the test's database."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'not-yet' / 'bot.db'}"
    return "postgresql+asyncpg://postgres:hunter2@127.0.0.1:1/nothing_here"


@pytest.fixture
async def dead_db_hook(emulator, database_url, tmp_path, clock):
    """The bot served by webhook, its database unreachable."""
    url = _dead_database(database_url, tmp_path)
    database = Database(url)
    svc = make_services(_settings(emulator, url), clock=clock, db=database)
    async with webhook_running(WebhookServer(build_application(svc), URL)) as server:
        emulator.route_webhook([server.url], retry_delay=0.1)
        yield svc, server, url
    await database.dispose()


async def test_healthz_checks_the_database(hook, dead_db_hook):
    async with httpx.AsyncClient() as client:
        good = await client.get(f"http://{hook.host}:{hook.port}/healthz")
        _, dead, _ = dead_db_hook
        bad = await client.get(f"http://{dead.host}:{dead.port}/healthz")
    assert (good.status_code, good.text) == (200, "ok")
    assert bad.status_code == 503
    assert bad.text.startswith("database unavailable (")
    assert "hunter2" not in bad.text and "not-yet" not in bad.text and "127.0.0.1" not in bad.text


async def test_an_update_while_the_database_is_down_gets_503_and_is_handled_when_it_is_back(
    emulator, dead_db_hook, database_url, tmp_path, caplog
):
    svc, server, _ = dead_db_hook
    stranger = emulator.user(620, first_name="Hoa")
    update_id = await stranger.send("/start")
    await asyncio.sleep(0.6)
    attempts = [a for a in emulator.webhook_attempts if a.update_id == update_id]
    assert len(attempts) >= 2  # Telegram (the emulator) keeps retrying
    assert all(a.status == 503 for a in attempts), [(a.status, a.error) for a in attempts]
    assert stranger.transcript == [m for m in stranger.transcript if not m.from_bot]  # no apology
    info = await server.webhook.application.bot.get_webhook_info()
    assert info.pending_update_count == 1
    assert info.last_error_message == "Wrong response from the webhook: 503 Service Unavailable"
    assert "hunter2" not in caplog.text

    if not database_url.startswith("sqlite"):
        return  # a PostgreSQL that is down cannot be brought back from here
    (tmp_path / "not-yet").mkdir()
    await svc.db.create_all()  # the database is back
    reply = await stranger.next_reply(timeout=10)
    assert reply.from_bot
    await emulator.wait_idle(timeout=5)
    assert [a.status for a in emulator.webhook_attempts if a.update_id == update_id][-1] == 200
    assert await _processed(svc) == 1


async def test_a_handler_error_that_is_not_the_database_keeps_the_apology_and_200(
    svc, emulator, union, hook
):
    await _member(svc, union, 621)
    lan = emulator.user(621, first_name="Lan")
    # Telegram refuses the reply once, for good (a retry of the update would fail the same).
    emulator.fail_chat(621, status=400, description="Bad Request: something odd", times=1)
    said = await say(svc, lan, "/help")
    assert said.templates == ["help", "common/error"]
    await emulator.wait_idle(timeout=5)
    assert [a.status for a in emulator.webhook_attempts] == [200]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


async def test_metrics_move_with_a_conversation_429s_and_reminders(svc, emulator, union, hook):
    before = await _metrics(hook)
    await _member(svc, union, 630)
    await _member(svc, union, 631, "Trần Văn Bình")
    lan = emulator.user(630, first_name="Lan")
    await say(svc, lan, "/help")
    emulator.fail_chat(630, status=429, retry_after=1, times=1)
    await say(svc, lan, "/topic")
    await lan.press(label(svc, "lesson_first"))
    await lan.next_reply(timeout=10)
    await emulator.wait_idle(timeout=5)
    # Reminders: on 2/4 at 07:30 both linked members are due their 7-day pledge reminder.
    svc.clock.set(datetime(2024, 4, 2, 7, 30))
    assert await plan_tick(svc) == 2
    after = await _metrics(hook)

    def moved(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert moved("chuyende_updates_total", kind="message", outcome="handled") == 2
    assert moved("chuyende_updates_total", kind="callback_query", outcome="handled") == 1
    assert moved("chuyende_handler_seconds_count") == 3
    assert moved("chuyende_sends_total", lane="reply", result="sent") >= 3
    assert moved("chuyende_rate_limited_total") == 1
    assert _sample(after, "chuyende_reminders_due") == 2
    assert _sample(after, "chuyende_outbox_depth") == 2  # the two reminders, queued, not sent
    for name in ("chuyende_sends_total", "chuyende_handler_seconds_bucket"):
        assert name in after

    svc.clock.set(datetime(2024, 4, 2, 12, 0))
    await plan_tick(svc)  # already queued: nobody is due any more
    assert _sample(await _metrics(hook), "chuyende_reminders_due") == 0


async def test_refused_and_malformed_requests_are_counted(svc, emulator, hook):
    before = await _metrics(hook)
    async with httpx.AsyncClient() as client:
        await client.post(hook.url, content=b"{}", headers={SECRET_HEADER: "nope"})
        await client.post(hook.url, content=b"{}", headers={SECRET_HEADER: SECRET})
    after = await _metrics(hook)
    rejected = {"kind": "unknown", "outcome": "rejected"}
    malformed = {"kind": "unknown", "outcome": "malformed"}
    name = "chuyende_updates_total"
    assert _sample(after, name, **rejected) - _sample(before, name, **rejected) == 1
    assert _sample(after, name, **malformed) - _sample(before, name, **malformed) == 1


# ---------------------------------------------------------------------------------------------
# The command line and SIGTERM
# ---------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CHUYENDE_LOCALE", "en")
    monkeypatch.delenv("CHUYENDE_WEBHOOK_SECRET", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("secret", "args", "says"),
    [
        (None, ["--webhook", URL], "CHUYENDE_WEBHOOK_SECRET is not set"),
        ("", ["--webhook", URL], "CHUYENDE_WEBHOOK_SECRET is not set"),
        ("has space!", ["--webhook", URL], "may only contain A-Z"),
        (SECRET, ["--webhook", "http://bot.example.org/hook"], "must start with https://"),
        (SECRET, ["--webhook", "https://bot.example.org/healthz"], "cannot be /healthz"),
        (SECRET, ["--port", "9000"], "only apply with --webhook"),
    ],
)
def test_run_refuses_a_webhook_it_cannot_serve(cli_env, secret, args, says):
    if secret is not None:
        cli_env.setenv("CHUYENDE_WEBHOOK_SECRET", secret)
    result = runner.invoke(cli_app, ["run", *args])
    assert result.exit_code == 2
    assert says in result.output
    assert TOKEN not in result.output


def _child_env(emulator, database: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHUYENDE_", "TELEGRAM_", "DATABASE_URL"))
    }
    env.update(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=emulator.base_url,
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        CHUYENDE_WEBHOOK_SECRET=SECRET,
        CHUYENDE_LOCALE="vi",
    )
    return env


async def _until_draining(port: int) -> None:
    """Until the bot has taken the signal in: /healthz says it is shutting down (503), or
    the port no longer takes connections."""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(200):
            try:
                response = await client.get(f"http://127.0.0.1:{port}/healthz")
            except httpx.ConnectError:
                return
            if response.status_code == 503:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the bot never started draining after SIGTERM")


async def test_sigterm_finishes_the_update_in_flight_and_exits_0(emulator, tmp_path):
    env = _child_env(emulator, tmp_path / "bot.db")
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "db", "upgrade", env=env, cwd=tmp_path
    )
    assert await upgrade.wait() == 0
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot.cli", "run", "--webhook", URL, "--listen", "127.0.0.1", "--port", str(port)),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        emulator.route_webhook([f"http://127.0.0.1:{port}/tg/hook"], retry_delay=0.2)
        for _ in range(300):
            if emulator.webhook is not None:
                break
            await asyncio.sleep(0.05)
        assert emulator.webhook is not None, "the bot did not call setWebhook"

        emulator.set_send_delay(1.5, methods=["sendMessage"])
        sends_before = emulator.stats["sendMessage"]
        hoa = emulator.user(640, first_name="Hoa")
        first = await hoa.send("/start")
        # Wait until the bot is inside the handler, its reply held by the slow sendMessage.
        # (A POST under way is not enough: on a slow machine uvicorn may not have read it
        # yet, and a request read after SIGTERM is rightly refused.)
        for _ in range(500):
            if emulator.stats["sendMessage"] > sends_before:
                break
            await asyncio.sleep(0.02)
        assert emulator.stats["sendMessage"] > sends_before, "the handler never replied"
        assert emulator.webhook_in_flight == 1
        process.send_signal(signal.SIGTERM)
        await _until_draining(port)
        late = await emulator.user(641, first_name="Mai").send("/start")  # after SIGTERM

        reply = await hoa.next_reply(timeout=15)
        assert reply.from_bot
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await process.stdout.read()).decode()

    [answered] = [a for a in emulator.webhook_attempts if a.update_id == first]
    assert answered.status == 200  # finished and answered, not cut off
    assert next(d.monotonic for d in emulator.deliveries if d.chat_id == 640) <= answered.finished
    # The update that came after SIGTERM was not taken: it waits for another process.
    assert all(not a.ok for a in emulator.webhook_attempts if a.update_id == late)
    assert emulator.pending_updates() == 1
    assert emulator.user(641).transcript[-1].from_bot is False
    assert TOKEN not in output and SECRET not in output
    assert "SIGTERM received" in output
    assert "Traceback" not in output, output


async def test_polling_stops_on_sigterm_during_telegrams_pause_and_answers_nothing_twice(
    emulator, tmp_path
):
    """`chuyende run` (long polling) while flood control answers getUpdates with 429 "retry
    after 60": PTB alone would sleep the minute out after SIGTERM. The update fetched but not
    confirmed comes again to the next process, which does not answer it a second time."""
    env = _child_env(emulator, tmp_path / "bot.db")
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "db", "upgrade", env=env, cwd=tmp_path
    )
    assert await upgrade.wait() == 0

    async def start():
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot.cli", "run"),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    hoa = emulator.user(640, first_name="Hoa")
    process = await start()
    try:
        await hoa.send("/start")
        await hoa.next_reply(timeout=30)
        await hoa.replies_until_idle(idle=0.3)
        emulator.fail_updates(retry_after=60)
        before = len(hoa.bot_messages)
        await hoa.send("/help")  # the long poll under way takes it, the next poll gets 429
        await hoa.next_reply(timeout=15)
        await hoa.replies_until_idle(idle=0.3)
        help_messages = len(hoa.bot_messages) - before
        while not emulator.updates_refused:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the bot is in PTB's 60 s pause
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert time.monotonic() - started < 15
        output = (await process.stdout.read()).decode()
        assert "stop signal received" in output and TOKEN not in output

        emulator.fail_updates(None)
        answered = len(hoa.bot_messages)
        process = await start()
        await hoa.send("/help")
        await hoa.next_reply(timeout=30)
        await hoa.replies_until_idle(idle=0.5)
        # Only the new /help is answered; the first one, delivered again, is not.
        assert len(hoa.bot_messages) == answered + help_messages
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_port_already_taken_is_a_clear_error_not_a_traceback(emulator, tmp_path):
    env = _child_env(emulator, tmp_path / "bot.db")
    upgrade = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "db", "upgrade", env=env, cwd=tmp_path
    )
    assert await upgrade.wait() == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bot.cli", "run", "--webhook", URL, "--port", str(port)),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    text = output.decode()
    assert process.returncode == 1, text
    assert "webhook mode could not start" in text and "Traceback" not in text
    assert TOKEN not in text and SECRET not in text
    assert emulator.webhook is None  # nothing registered for a process that is not serving
