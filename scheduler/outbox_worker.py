"""Delivers the outbox through the rate limiter's background lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

from bot.context import Services
from bot.models import OutboxMessage
from bot.ratelimit import retry_after_seconds
from bot.services import outbox

logger = logging.getLogger(__name__)
BACKGROUND = {"lane": "background"}
# Bad requests that will never succeed on retry: record them as failed at once.
_FINAL = ("chat not found", "user is deactivated", "message is too long", "can't parse")


class OutboxWorker:
    """Claims due rows in batches and sends them concurrently; every row is marked after."""

    def __init__(self, svc: Services, bot: Bot, concurrency: int = 32, batch: int = 100) -> None:
        self.svc = svc
        self.bot = bot
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.concurrency = concurrency
        self.batch = batch
        self._wake = asyncio.Event()
        self._stopping = False
        self.results: dict[str, int] = {"sent": 0, "blocked": 0, "retry": 0, "failed": 0}

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch and send it; returns how many rows were claimed."""
        async with self.svc.db.session() as session:
            claimed = await outbox.claim(session, self.name, self.svc.clock.now(), self.batch)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(message: OutboxMessage) -> None:
            async with gate:
                await self._deliver(message)

        await asyncio.gather(*(one(m) for m in claimed))
        return len(claimed)

    async def drain(self) -> int:
        """Send until nothing is due (tests and shutdown)."""
        total = 0
        while claimed := await self.run_once():
            total += claimed
        return total

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                if await self.run_once():
                    continue
            except Exception:  # a database hiccup must not end delivery for good
                logger.exception("outbox delivery round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=2)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _deliver(self, message: OutboxMessage) -> None:
        markup = (
            InlineKeyboardMarkup.de_json(message.reply_markup, self.bot)
            if message.reply_markup
            else None
        )
        try:
            await self.bot.send_message(
                message.chat_id, message.text, reply_markup=markup, rate_limit_args=BACKGROUND
            )
        except Forbidden:
            await self._mark(outbox.mark_blocked, message)
            self.results["blocked"] += 1
            return
        except RetryAfter as error:  # the limiter already waited and retried; try later
            delay = retry_after_seconds(error)
            await self._retry(message, f"429 retry after {delay:g} s", delay)
            return
        except BadRequest as error:
            if any(text in str(error).lower() for text in _FINAL):
                async with self.svc.db.session() as session:
                    message.attempts = outbox.MAX_ATTEMPTS
                    await outbox.mark_retry(session, message, self.svc.clock.now(), str(error))
                self.results["failed"] += 1
                return
            await self._retry(message, str(error))
            return
        except TelegramError as error:
            await self._retry(message, str(error))
            return
        async with self.svc.db.session() as session:
            await outbox.mark_sent(session, message.id, self.svc.clock.now())
        self.results["sent"] += 1

    async def _mark(self, action, message: OutboxMessage) -> None:
        async with self.svc.db.session() as session:
            await action(session, message, self.svc.clock.now())

    async def _retry(self, message: OutboxMessage, error: str, delay: float = 0) -> None:
        logger.warning("outbox %s not sent (%s), attempt %s", message.id, error, message.attempts)
        async with self.svc.db.session() as session:
            again = await outbox.mark_retry(
                session, message, self.svc.clock.now() + timedelta(seconds=delay), error
            )
        self.results["retry" if again else "failed"] += 1
