"""Webhook mode: Telegram POSTs updates to a Starlette app served by uvicorn in the bot's loop.

The pattern of python-telegram-bot's ``examples/customwebhookbot/starlettebot.py`` (uvicorn
and the Application share one event loop), with one difference that matters for losing
nothing: the endpoint does not just queue the update, it runs it through the Application's
update processor (so one chat's updates keep their order, bot/update_processor.py) and
answers 200 only once it has been processed. Anything else makes Telegram deliver it again:

- 403 without the right ``X-Telegram-Bot-Api-Secret-Token`` (constant-time compare);
- 400 for a body that is not JSON or not an Update (nothing Telegram sends; no retry helps);
- 503 while shutting down, and when a handler failed because the database is unreachable,
  so the retry finds it back instead of the member getting an apology for a lost message.

Other handler errors keep polling's behaviour: guards.on_error apologises, and the answer
is 200 (a retry would fail the same way).

It also serves ``GET /healthz`` (``SELECT 1``) and ``GET /metrics`` (bot/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes

from bot import metrics
from bot.context import BOT_DATA_KEY, Services
from bot.services import updates
from bot.tcp import bind_tcp

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# The update types the handlers in bot/app.py act on; polling gets the same by default.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
HEALTH_TIMEOUT_SECONDS = 5.0
RESERVED_PATHS = ("/healthz", "/metrics")


@dataclass
class _Outcome:
    """What the error handlers saw while one webhook request processed its update."""

    failed: bool = False
    transient: bool = False


# Set by the endpoint around processing; the error handler (same task, bot/update_processor
# awaits in place) writes into the holder. None outside webhook requests, e.g. when polling.
_current: ContextVar[_Outcome | None] = ContextVar("webhook_outcome", default=None)


def is_transient(error: BaseException | None) -> bool:
    """A failure a later retry can cure: the database (or the way to it) is down right now."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(
            error,
            sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.DisconnectionError
            | sa_exc.TimeoutError
            | ConnectionError
            | socket.gaierror,
        ):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


async def note_failure(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """First error handler: a transient failure of a webhook update stops here, unanswered,
    so the endpoint answers 503 and Telegram delivers the update again; the rest go on to
    guards.on_error as before."""
    # Whatever happens next, a failed update is not done: its retry must run it again.
    updates.handler_failed()
    outcome = _current.get()
    if outcome is None:
        return
    outcome.failed = True
    if is_transient(context.error):
        outcome.transient = True
        update_id = update.update_id if isinstance(update, Update) else "?"
        logger.warning(
            "update %s not processed, database unavailable (%s): answered 503 for a retry",
            update_id,
            type(context.error).__name__,
        )
        raise ApplicationHandlerStop


def install_error_hook(application: Application) -> None:
    """Put note_failure before the error handlers already registered (they run in order)."""
    if note_failure in application.error_handlers:
        return
    existing = dict(application.error_handlers)
    application.error_handlers.clear()
    application.add_error_handler(note_failure)
    for callback, block in existing.items():
        application.add_error_handler(callback, block=block)


def webhook_secret(application: Application) -> str:
    svc: Services = application.bot_data[BOT_DATA_KEY]
    secret = svc.settings.webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ValueError("CHUYENDE_WEBHOOK_SECRET is not set")
    return secret.get_secret_value()


async def register_webhook(application: Application, url: str) -> None:
    """Tell Telegram where to POST updates. Only one process calls this (the leader): the
    URL and secret are the same for all, and a second call would only repeat the first."""
    await application.bot.set_webhook(
        url=url,
        secret_token=webhook_secret(application),
        allowed_updates=ALLOWED_UPDATES,
        drop_pending_updates=False,  # what queued while no process listened is still owed
    )
    # The host only: operators often put the token in the path.
    logger.info("webhook registered for %s", urlsplit(url).hostname)


def _kind(data: dict) -> str:
    """The update's type, for the metric label (known types only, so labels stay few)."""
    kind = next((key for key in data if key != "update_id"), "unknown")
    return kind if kind in Update.ALL_TYPES else "other"


class WebhookApp:
    """The Starlette app: the update endpoint at the webhook URL's path, /healthz, /metrics."""

    def __init__(self, application: Application, path: str) -> None:
        if path in RESERVED_PATHS:
            raise ValueError(f"the webhook path cannot be {path}")
        self.application = application
        self.svc: Services = application.bot_data[BOT_DATA_KEY]
        self.path = path
        self.draining = False
        self.in_flight = 0
        self._secret = webhook_secret(application).encode()
        self.app = Starlette(
            routes=[
                Route(path, self.receive, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

    async def receive(self, request: Request) -> Response:
        if self.draining:
            metrics.record_update("unknown", metrics.UNAVAILABLE)
            return PlainTextResponse("shutting down", status_code=503)
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            metrics.record_update("unknown", metrics.REJECTED)
            logger.warning("webhook request without the right secret token rejected")
            return PlainTextResponse("forbidden", status_code=403)
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an update")
            update = Update.de_json(data, self.application.bot)
        except Exception as error:  # whatever the body was, nothing of it is processed
            metrics.record_update("unknown", metrics.MALFORMED)
            logger.warning("malformed webhook body rejected (%s)", type(error).__name__)
            return PlainTextResponse("not an update", status_code=400)
        return await self._process(update, _kind(data))

    async def _process(self, update: Update, kind: str) -> Response:
        outcome = _Outcome()
        token = _current.set(outcome)
        self.in_flight += 1
        began = time.perf_counter()
        try:
            processor = self.application.update_processor
            await processor.process_update(update, self.application.process_update(update))
        except Exception as error:  # outside any handler (the processor): never a 200
            outcome.failed = True
            outcome.transient = is_transient(error)
            logger.error("update %s failed outside the handlers", update.update_id, exc_info=True)
            if not outcome.transient:
                metrics.record_update(kind, metrics.ERROR, time.perf_counter() - began)
                return PlainTextResponse("failed", status_code=500)
        finally:
            self.in_flight -= 1
            _current.reset(token)
        seconds = time.perf_counter() - began
        if outcome.transient:
            metrics.record_update(kind, metrics.RETRY, seconds)
            return PlainTextResponse("database unavailable, retry", status_code=503)
        metrics.record_update(kind, metrics.ERROR if outcome.failed else metrics.HANDLED, seconds)
        return Response(status_code=200)

    async def healthz(self, request: Request) -> Response:
        if self.draining:
            return PlainTextResponse("shutting down", status_code=503)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                async with self.svc.db.read_engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as error:  # the class name only: messages may carry the URL
            return PlainTextResponse(
                f"database unavailable ({type(error).__name__})", status_code=503
            )
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        await metrics.refresh_outbox_depth(self.svc.db)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


class _Server(uvicorn.Server):
    """uvicorn whose SIGTERM/SIGINT start our drain, and which does not re-raise the signal
    when it has stopped (uvicorn's default would kill the process before the Application
    stops and flushes)."""

    def __init__(self, config: uvicorn.Config, webhook: WebhookApp, signals: bool) -> None:
        super().__init__(config)
        self.webhook = webhook
        self.signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT)
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.should_exit:  # a second signal: stop waiting for what is in flight
            self.force_exit = True
            return
        logger.info("%s received: finishing the updates in flight", signal.Signals(sig).name)
        self.begin_exit()

    def begin_exit(self) -> None:
        self.webhook.draining = True
        self.should_exit = True


class WebhookServer:
    """The webhook app served by uvicorn in the running loop, on `host:port` (0 = a free one).

    `webhook_url` is the public https URL Telegram is given; the endpoint is at its path.
    """

    def __init__(
        self,
        application: Application,
        webhook_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        signals: bool = False,
        graceful_seconds: float = 30.0,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook = WebhookApp(application, urlsplit(webhook_url).path or "/")
        self.host = host
        self.port = port
        self.signals = signals
        self.graceful_seconds = graceful_seconds
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The local http URL of the update endpoint (what a proxy would forward to)."""
        return f"http://{self.host}:{self.port}{self.webhook.path}"

    def bind(self) -> None:
        """Take the port now (OSError if it is taken), before anything else has started."""
        if self._socket is not None:
            return
        sock = bind_tcp(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._socket = sock

    async def start(self) -> None:
        self.bind()
        sock = self._socket
        assert sock is not None
        config = uvicorn.Config(
            self.webhook.app,
            log_config=None,
            access_log=False,
            lifespan="off",  # the Application's lifecycle is ours (webhook_running)
            http="h11",
            ws="none",
            timeout_graceful_shutdown=int(self.graceful_seconds),
        )
        self._server = _Server(config, self.webhook, self.signals)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                await self._task
                raise RuntimeError("the webhook server stopped while starting")
            await asyncio.sleep(0.01)
        logger.info("webhook server listening on %s:%s", self.host, self.port)

    async def wait(self) -> None:
        """Until a signal (or stop()) ended the server and the requests in flight finished."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Refuse new updates, let those in flight finish, close the socket."""
        if self._server is None or self._task is None:
            if self._socket is not None:
                self._socket.close()
            self._socket = None
            return
        self._server.begin_exit()
        try:
            await self._task
        finally:
            self._server = None
            self._task = None
            self._socket = None


@contextlib.asynccontextmanager
async def webhook_running(server: WebhookServer) -> AsyncIterator[WebhookServer]:
    """The whole lifecycle of the server's Application around it, like bot.app.polling."""
    application = server.webhook.application
    url = server.webhook_url
    install_error_hook(application)
    server.bind()  # a taken port fails here, before the Application or its jobs start
    try:
        await application.initialize()
    except BaseException:
        await server.stop()
        raise
    if application.post_init:
        await application.post_init(application)
    await application.start()
    try:
        await server.start()  # listening before setWebhook, so the first POST finds us
        await _register_when_leading(application, url)
        yield server
    finally:
        await server.stop()  # in-flight updates finish before the Application stops
        await application.stop()
        await application.shutdown()
        if application.post_shutdown:
            await application.post_shutdown(application)  # stops the outbox worker, flushes


async def _register_when_leading(application: Application, url: str) -> None:
    """setWebhook from the holder of the periodic-jobs lock only, each time it is elected.

    The URL and secret are the same for every process; one caller keeps Telegram from
    seeing a burst of identical calls at every rolling restart. Without background jobs
    (CHUYENDE_BACKGROUND=false) there is no election: the process registers itself.
    """
    from scheduler.setup import leadership

    leading = leadership(application)
    if leading is None:
        await register_webhook(application, url)
        return
    leading.on_elected(lambda: register_webhook(application, url))


async def serve_webhook(application: Application, url: str, host: str, port: int) -> None:
    """`chuyende run --webhook`: serve until SIGTERM/SIGINT, then drain and stop."""
    server = WebhookServer(application, url, host, port, signals=True)
    async with webhook_running(server):
        await server.wait()
    logger.info("webhook server stopped")
