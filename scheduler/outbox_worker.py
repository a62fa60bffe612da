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
from bot.services import broadcasts, outbox

logger = logging.getLogger(__name__)
BACKGROUND = {"lane": "background"}
# Bad requests that will never succeed on retry: record them as failed at once.
_FINAL = ("chat not found", "user is deactivated", "message is too long", "can't parse")


class OutboxWorker:
    """Keeps up to `concurrency` sends in flight from rows claimed in batches.

    Two choices keep the background lane full (bench/send_pipeline.py measures them):
    - the next batch is claimed as soon as the rows in hand fall to half a batch, so a row
      waiting out a 429 never idles the lane the way a per-batch barrier did;
    - delivered rows are marked together (one UPDATE every `flush_seconds` or `flush_rows`),
      because SQLite has one writer and a commit per row queued behind members' replies.
    """

    def __init__(
        self,
        svc: Services,
        bot: Bot,
        concurrency: int = 32,
        batch: int = 100,
        flush_seconds: float = 0.05,
        flush_rows: int = 100,
    ) -> None:
        self.svc = svc
        self.bot = bot
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.concurrency = concurrency
        self.batch = batch
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._wake = asyncio.Event()
        self._stopping = False
        self._sent_ids: list[int] = []
        # Broadcasts with rows in hand, and those of them their sender stopped: rows already
        # claimed are skipped rather than sent (the stop marked them cancelled).
        self._broadcasts_in_hand: set[int] = set()
        self._stopped_broadcasts: set[int] = set()
        self.stop_check_seconds = 0.25
        self._flush_lock = asyncio.Lock()
        self.results: dict[str, int] = {"sent": 0, "blocked": 0, "retry": 0, "failed": 0}

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Send until nothing is due; returns how many rows were claimed."""
        stop = asyncio.Event()
        flusher = asyncio.create_task(self._flush_every_interval(stop))
        try:
            return await self._send_claimed()
        finally:
            stop.set()
            await flusher
            await self._flush()

    async def _send_claimed(self) -> int:
        gate = asyncio.Semaphore(self.concurrency)
        in_hand: set[asyncio.Task[None]] = set()
        low_water = max(1, self.batch // 2)
        room = asyncio.Event()
        total = 0

        async def one(message: OutboxMessage) -> None:
            async with gate:
                if message.broadcast_id in self._stopped_broadcasts:
                    return
                await self._deliver(message)

        def done(task: asyncio.Task[None]) -> None:
            in_hand.discard(task)
            if len(in_hand) <= low_water:
                room.set()

        try:
            while True:
                claimed = [] if self._stopping else await self._claim()
                total += len(claimed)
                self._broadcasts_in_hand.update(
                    m.broadcast_id for m in claimed if m.broadcast_id is not None
                )
                for message in claimed:
                    task = asyncio.create_task(one(message))
                    in_hand.add(task)
                    task.add_done_callback(done)
                if not claimed:
                    await asyncio.gather(*in_hand)
                    self._broadcasts_in_hand.clear()
                    self._stopped_broadcasts.clear()
                    return total
                room.clear()
                if len(in_hand) > low_water:
                    await room.wait()
        finally:
            # Stopping mid-run: what is in flight finishes or is cancelled; an unmarked row
            # is simply claimed again when its lease runs out.
            for task in in_hand:
                task.cancel()
            await asyncio.gather(*in_hand, return_exceptions=True)

    async def _claim(self) -> list[OutboxMessage]:
        async with self.svc.db.session() as session:
            return await outbox.claim(session, self.name, self.svc.clock.now(), self.batch)

    async def _flush_every_interval(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_seconds)
            try:
                await self._flush()
                if self._broadcasts_in_hand and loop.time() >= next_check:
                    next_check = loop.time() + self.stop_check_seconds
                    await self._check_stopped()
            except Exception:  # kept for the next flush; a hiccup must not stop the sends
                logger.exception("marking sent outbox rows failed")

    async def _check_stopped(self) -> None:
        async with self.svc.db.reader() as session:
            stopped = await broadcasts.stopped_among(session, self._broadcasts_in_hand)
        self._stopped_broadcasts |= stopped

    async def _flush(self) -> None:
        """Mark the delivered rows; on failure or cancellation they wait for the next try."""
        async with self._flush_lock:
            ids, self._sent_ids = self._sent_ids, []
            if not ids:
                return
            try:
                async with self.svc.db.session() as session:
                    await outbox.mark_sent(session, ids, self.svc.clock.now())
            except BaseException:
                self._sent_ids[:0] = ids
                raise

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                if await self.drain():
                    continue
            except Exception:  # a database hiccup must not end delivery for good
                logger.exception("outbox delivery round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=2)

    def stop(self) -> None:
        """Claim nothing more; what is in hand is sent and marked before run_forever ends."""
        self._stopping = True
        self._wake.set()

    async def _deliver(self, message: OutboxMessage) -> None:
        markup = (
            InlineKeyboardMarkup.de_json(message.reply_markup, self.bot)
            if message.reply_markup
            else None
        )
        try:
            if message.photo:  # a broadcast with a picture: the text is its caption
                await self.bot.send_photo(
                    message.chat_id,
                    message.photo,
                    caption=message.text,
                    reply_markup=markup,
                    rate_limit_args=BACKGROUND,
                )
            else:
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
        self._sent_ids.append(message.id)
        self.results["sent"] += 1
        if len(self._sent_ids) >= self.flush_rows:
            await self._flush()

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
