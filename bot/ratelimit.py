"""Telegram's flood limits as a python-telegram-bot rate limiter with two lanes.

Telegram allows about 30 messages a second per bot and about one a second per chat, answers
a flood with 429 and ``retry_after``, and answers 403 when a user blocked the bot. The bot
sends two kinds of traffic:

* the **reply** lane: answers to a member's own message. They must come first and are never
  held up by background traffic. Any request without ``rate_limit_args`` is a reply.
* the **background** lane: reminders, digests, broadcasts, sent by the outbox worker with
  ``rate_limit_args={"lane": "background"}`` (PTB hands it to :meth:`process_request`).

How a message-producing request (``send*`` except ``sendChatAction``, ``edit*``,
``copyMessage``, ``forwardMessage``...) passes :class:`LaneRateLimiter`::

    reply:       shared bucket (per_bot/s, priority 0) -> send
    background:  its chat's turn (FIFO, one background send per chat in flight)
                 -> the chat's next slot (>= 1/per_chat s after the previous send finished,
                    or after a 429's retry_after)
                 -> background bucket (background_share * per_bot /s)
                 -> shared bucket (per_bot/s, priority 1) -> send

Why replies never wait behind background sends, even with thousands queued: a queued
background send waits in its chat's turn, its chat's slot or the background bucket, none of
which a reply touches. Only the few that got through the background bucket wait in the
shared bucket, and there a reply is served first. Since background traffic can draw at most
``background_share`` of the shared bucket's refill, the shared bucket stays (nearly) full and
a reply normally finds a token at once; at worst it waits for the next token, 1/per_bot s.

Other rules:

* Replies are not limited per chat (a reply is often two messages in a row and Telegram
  tolerates short bursts), only by the shared bucket. A reply does push back its chat's next
  background slot, so a reminder does not follow a reply to the same chat at once.
* A 429 (:class:`telegram.error.RetryAfter`) waits ``retry_after`` and retries, up to
  ``max_retries`` times, then re-raises. It delays only what it has to: on a background send,
  that send and the background sends queued for the same chat (they wait for its turn); on a
  reply, that reply (and its chat's next background slot, which Telegram would refuse anyway).
  Other chats and other replies go on. PTB's stock ``AIORateLimiter`` pauses every request
  instead; not here.
* 403 (:class:`telegram.error.Forbidden`) and every other error propagate unchanged; the
  outbox worker decides what they mean (blocked, bounded retries).
* Every other endpoint (``getUpdates``, ``answerCallbackQuery``, ``getMe``,
  ``setMyCommands``, ``sendChatAction``, ``deleteMessage``...) is passed straight through.
* ``allow_paid_broadcast`` is not treated specially (the bot does not use it).

Why a small token bucket of our own rather than ``aiolimiter``: ``AsyncLimiter`` has no
priorities (its waiters are ordered by amount requested, then arrival), so a reply would
queue behind background sends; emulating priority with two limiters cannot make a waiting
background send step aside. :class:`_PriorityBucket` keeps one FIFO queue per priority, serves
the lower number first, and arms a single timer for the head of the queue, so thousands of
waiters cost nothing per tick. It is about forty lines and has its own tests.

Several processes: with a ``store`` (bot/ratestore.py, Redis or PostgreSQL) the shared and
background buckets draw their tokens from buckets that every process shares, so together the
processes stay within ``per_bot`` and background within ``background_share`` of it. A process
asks for tokens only when sends wait, in grants of at most ``grant`` (no more than wait, and
no more than the bucket's burst plus those due within the next 20 ms, which it paces out
itself at the rate), so one round trip serves the sends waiting and no process hoards
tokens; within the process the grant goes to replies before background
sends, as before, and background grants leave the shared bucket's last token to replies of
any process. If the store cannot be reached (or answers
slower than ``store_timeout``), the process logs it once and goes on with a local share of
``per_bot / processes`` until the store answers again (it is retried every few seconds), so
replies keep going and the processes together still stay within the rate.

``stats`` counts, for metrics: ``sent_reply``, ``sent_background``, ``retries_429``,
``gave_up_429`` (429s re-raised after ``max_retries``), ``store_grants`` /
``store_errors`` (round trips to the shared store), ``unlimited`` (requests passed
straight through) and ``wait_reply_s`` / ``wait_background_s`` (seconds spent waiting in the
limiter, 429 waits included, the HTTP requests themselves excluded). Nothing here logs
tokens, chat ids, texts or phone numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from bot import metrics

if TYPE_CHECKING:
    from bot.ratestore import RateStore

#: The part of the per-bot rate that sends of the bot's own (the outbox) may use.
BACKGROUND_SHARE = 0.8

__all__ = [
    "BACKGROUND",
    "MESSAGE_ENDPOINTS",
    "REPLY",
    "LaneRateLimiter",
    "is_message_endpoint",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

REPLY = "reply"
BACKGROUND = "background"
_LANES = (REPLY, BACKGROUND)
_ARG_KEYS = frozenset({"lane", "max_retries"})

#: Endpoints that produce or change a message; any other ``send*`` except sendChatAction too.
MESSAGE_ENDPOINTS = frozenset(
    {
        "sendMessage", "sendPhoto", "sendDocument", "sendAudio", "sendVideo", "sendAnimation",
        "sendVoice", "sendVideoNote", "sendSticker", "sendMediaGroup", "sendLocation",
        "sendVenue", "sendContact", "sendPoll", "sendDice", "editMessageText",
        "editMessageCaption", "editMessageMedia", "editMessageReplyMarkup",
        "editMessageLiveLocation", "stopMessageLiveLocation", "stopPoll", "copyMessage",
        "copyMessages", "forwardMessage", "forwardMessages",
    }
)  # fmt: skip
_EXEMPT = frozenset({"sendChatAction"})

# Timers may fire a hair early and float refills may land just under a whole token.
_EPSILON = 1e-9
# The background bucket paces rather than bursts, so it holds about one token; the extra half
# keeps a timer that fires a little late from losing that time for good (with a capacity of
# exactly one, every late wake-up would be lost: about 5% of the rate at 80/s).
_BACKGROUND_CAPACITY = 1.5
# Forget idle chats once this many are remembered (then at twice the number still busy).
_PRUNE_AT = 4096
# After a failed round trip to the shared store, send on the local share this long.
_STORE_RETRY_SECONDS = 5.0
# A grant from the store also takes the tokens due within this long, paced out here: at a
# high rate a round trip then brings up to `grant` tokens rather than the burst's 3, so
# the sends do not queue on the store (bench/throughput.py: /topic on PostgreSQL); at 30/s
# it is at most one token ahead, spent when due. A process that falls behind (a busy event
# loop) sends what it holds at once when it catches up, so at worst a window sees this much
# more than the rate allows: `rate * TAKE_AHEAD_SECONDS` tokens on top of the burst.
TAKE_AHEAD_SECONDS = 0.02
_FALLBACK = object()  # what a waiter is told when the store failed: ask the local share

_Result = bool | dict[str, Any] | list[dict[str, Any]]


def is_message_endpoint(endpoint: str) -> bool:
    """Whether a Bot API method counts against Telegram's message limits."""
    if endpoint in _EXEMPT:
        return False
    return endpoint in MESSAGE_ENDPOINTS or endpoint.startswith("send")


def retry_after_seconds(exc: RetryAfter) -> float:
    """``retry_after`` of a 429 in seconds, whether PTB gives a timedelta or an int.

    PTB 22 stores a timedelta in ``_retry_after``; its public ``retry_after`` is an int (with
    a deprecation warning) unless ``PTB_TIMEDELTA`` is set, then a timedelta.
    """
    value = getattr(exc, "_retry_after", None)
    if value is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PTBDeprecationWarning)
            value = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)
    return max(0.0, seconds)


class _PriorityBucket:
    """A token bucket: ``rate`` tokens a second, at most ``capacity`` kept.

    Waiters are served lowest priority number first, FIFO within a priority. A new request
    takes a token at once only if nobody of the same or a more urgent priority is waiting,
    so a reply may overtake waiting background sends but never another reply. One timer,
    armed for the moment the next token is due, wakes the queue.
    """

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float], priorities: int = 1
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()
        self._queues: list[deque[asyncio.Future[None]]] = [deque() for _ in range(priorities)]
        self._timer: asyncio.TimerHandle | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _waiting(self, priority: int) -> bool:
        """Whether a live waiter of this or a more urgent priority exists."""
        for queue in self._queues[: priority + 1]:
            while queue and queue[0].done():  # cancelled waiters are dropped lazily
                queue.popleft()
            if queue:
                return True
        return False

    def waiters(self) -> int:
        return sum(not f.done() for queue in self._queues for f in queue)

    async def acquire(self, priority: int = 0) -> None:
        self._refill()
        if self._tokens >= 1 - _EPSILON and not self._waiting(priority):
            self._tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        self._arm()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted, then cancelled before it could run: give the token back.
                self._refill()
                self._tokens = min(self.capacity, self._tokens + 1)
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        self._timer = None
        self._refill()
        for queue in self._queues:
            while queue and self._tokens >= 1 - _EPSILON:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    self._tokens -= 1
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None or not self._waiting(len(self._queues) - 1):
            return
        delay = max(0.0, (1 - self._tokens) / self.rate)
        self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)

    def close(self) -> None:
        """Stop the timer and cancel every waiter (nobody is left hanging)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for queue in self._queues:
            while queue:
                queue.popleft().cancel()


class _StoreBucket:
    """:class:`_PriorityBucket`'s interface, with tokens granted by a shared store.

    One pump task per bucket asks the store for as many tokens as there are waiters (at most
    ``grant``), hands them out most urgent priority first, and when the store has none waits
    the time it names. A granted token whose waiter was cancelled meanwhile is dropped: it
    was taken from the shared budget, so keeping it for later could exceed the rate.
    With two priorities, a grant for background waiters only leaves ``reserve`` tokens in
    the shared bucket (see :meth:`_pump`): within a process replies are served first anyway,
    and this keeps other processes' background sends from taking a reply's token.
    If the store fails, every waiter (and every request for ``_STORE_RETRY_SECONDS`` after)
    is served by ``fallback``, a local bucket at this process's conservative share.
    """

    def __init__(
        self,
        store: RateStore,
        name: str,
        rate: float,
        capacity: float,
        fallback: _PriorityBucket,
        clock: Callable[[], float],
        *,
        priorities: int = 1,
        grant: int = 32,
        ahead: float = 0.0,
        reserve: float = 1.0,
        timeout: float = 0.5,
        stats: Counter[str],
    ) -> None:
        self.store = store
        self.reserve = reserve if priorities > 1 else 0.0
        self.name = name
        self.rate = rate
        self.capacity = capacity
        self.fallback = fallback
        self.grant = grant
        self.ahead = ahead
        self.timeout = timeout
        self.stats = stats
        self._clock = clock
        self._queues: list[deque[asyncio.Future[object]]] = [deque() for _ in range(priorities)]
        self._pump_task: asyncio.Task[None] | None = None
        self._local_until = float("-inf")
        self._failing = False
        self._reply_came = asyncio.Event()  # cuts short a wait computed for background only

    def _live(self) -> int:
        for queue in self._queues:
            while queue and queue[0].done():
                queue.popleft()
        return sum(not f.done() for queue in self._queues for f in queue)

    def _live_at(self, priority: int) -> int:
        return sum(not f.done() for f in self._queues[priority])

    def waiters(self) -> int:
        return self._live() + self.fallback.waiters()

    async def acquire(self, priority: int = 0) -> None:
        if self._clock() < self._local_until:
            await self.fallback.acquire(priority)
            return
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        if priority == 0:
            self._reply_came.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.create_task(self._pump(), name=f"rate-{self.name}")
        if await future is _FALLBACK:
            await self.fallback.acquire(priority)

    async def _pump(self) -> None:
        while self._live() > 0:
            # Replies waiting here: ask for them with the full burst and the tokens due
            # soon. Only background waiting: ask as if the bucket were `reserve` tokens
            # smaller and take none ahead, so background sends of every process leave the
            # last tokens to replies (of any process) and never drain it.
            urgent = self._live_at(0)
            want = min(urgent or self._live(), self.grant)
            capacity = self.capacity if urgent else max(1.0, self.capacity - self.reserve)
            ahead = self.ahead if urgent or not self.reserve else 0.0
            try:
                granted, wait = await asyncio.wait_for(
                    self.store.take(self.name, self.rate, capacity, want, ahead),
                    self.timeout,
                )
            except Exception as error:  # the store is away: go local, in priority order
                self.stats["store_errors"] += 1
                self._local_until = self._clock() + _STORE_RETRY_SECONDS
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "shared rate store (%s) failed (%s): sending at a local share of "
                        "%.3g/s, retrying it every %.0f s",
                        self.store.kind,
                        type(error).__name__,
                        self.fallback.rate,
                        _STORE_RETRY_SECONDS,
                    )
                self._release_all(_FALLBACK)
                return
            self.stats["store_grants"] += 1
            if self._failing:
                self._failing = False
                log.warning("shared rate store (%s) answers again", self.store.kind)
            answered = self._clock()
            await self._hand_out(granted, wait, answered)
            if self._live():
                wait = max(answered + wait - self._clock(), _EPSILON)
                self._reply_came.clear()
                if urgent:
                    await asyncio.sleep(wait)
                else:  # a reply need not wait out the background's longer wait
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._reply_came.wait(), wait)

    async def _hand_out(self, granted: int, wait: float, answered: float) -> None:
        """Give the `granted` tokens to waiters, most urgent first, each no earlier than it
        falls due: token i of k, `(k - i) / rate` before the `wait` after `answered` (those
        taken ahead of time are paced out here). Tokens left with no waiter are dropped."""
        period = 1.0 / self.rate
        for index in range(granted):
            delay = answered + wait - (granted - index) * period - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            waiter = self._next_waiter()
            if waiter is None:
                return
            waiter.set_result(None)

    def _next_waiter(self) -> asyncio.Future[object] | None:
        for queue in self._queues:
            while queue:
                future = queue.popleft()
                if not future.done():
                    return future
        return None

    def _release_all(self, result: object) -> None:
        for queue in self._queues:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._pump_task = None
        for queue in self._queues:
            while queue:
                queue.popleft().cancel()
        self.fallback.close()


@dataclass(slots=True)
class _ChatState:
    """Background sends to one chat: whose turn it is and when the next may start.

    One is kept for every chat sent to until it is pruned, thousands at a time, so it is
    small: slots, and a list for the waiters (rarely more than one or two). With a deque
    each state cost about 1.3 kB of malloc (a 760-byte deque and its first 528-byte block),
    5 MB at the 4,096 kept before a prune (bench/memory.py --heap).
    """

    next_at: float = float("-inf")
    busy: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def idle(self, now: float) -> bool:
        return not self.busy and not self.waiters and self.next_at <= now


class LaneRateLimiter(BaseRateLimiter[dict[str, Any]]):
    """Reply lane first, background lane at ``background_share`` of the per-bot rate and
    ``per_chat`` per chat; 429 retried where it hit. See the module docstring.

    Args:
        per_bot: message-producing requests a second for the whole bot.
        per_chat: background sends a second to one chat.
        background_share: the background lane's share of ``per_bot``.
        max_retries: retries after a 429 before it is re-raised (``rate_limit_args`` may
            override it per call with ``"max_retries"``).
        clock: monotonic seconds; waits are real ``asyncio`` sleeps, so it must run with
            real time (injectable to line timestamps up with another monotonic source).
        burst: how many messages the shared bucket lets through at once after a quiet
            moment (a reply of a few messages goes out without pacing).
        store: where the per-bot budget is shared with other processes (bot/ratestore.py);
            None keeps it in this process.
        processes: how many processes share the bot; with a store, each sends at
            ``1/processes`` of the rates while the store cannot be reached.
        grant: at most this many tokens per round trip to the store.
        store_timeout: seconds to wait for the store before going local.
    """

    def __init__(
        self,
        per_bot: float = 30.0,
        per_chat: float = 1.0,
        background_share: float = BACKGROUND_SHARE,
        max_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float = 3.0,
        store: RateStore | None = None,
        processes: int = 1,
        grant: int = 32,
        store_timeout: float = 0.5,
    ) -> None:
        if per_bot <= 0 or per_chat <= 0:
            raise ValueError("per_bot and per_chat must be positive")
        if not 0 < background_share <= 1:
            raise ValueError("background_share must be in (0, 1]")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        if processes < 1 or grant < 1:
            raise ValueError("processes and grant must be >= 1")
        self.per_bot = per_bot
        self.per_chat = per_chat
        self.background_share = background_share
        self.max_retries = max_retries
        self.burst = burst
        self.store = store
        self.processes = processes
        self.grant = grant
        self.store_timeout = store_timeout
        self._clock = clock
        self._chat_gap = 1.0 / per_chat
        #: Counters for metrics (see the module docstring).
        self.stats: Counter[str] = Counter()
        self._reset()

    def _reset(self) -> None:
        background_rate = self.per_bot * self.background_share
        if self.store is None:
            self._shared: _PriorityBucket | _StoreBucket = _PriorityBucket(
                self.per_bot, self.burst, self._clock, priorities=2
            )
            self._background: _PriorityBucket | _StoreBucket = _PriorityBucket(
                background_rate, _BACKGROUND_CAPACITY, self._clock
            )
        else:
            share = 1.0 / self.processes
            common = {"grant": self.grant, "ahead": TAKE_AHEAD_SECONDS,
                      "timeout": self.store_timeout, "stats": self.stats}
            self._shared = _StoreBucket(
                self.store,
                "shared",
                self.per_bot,
                self.burst,
                _PriorityBucket(self.per_bot * share, max(1.0, self.burst * share), self._clock, 2),
                self._clock,
                priorities=2,
                **common,
            )
            self._background = _StoreBucket(
                self.store,
                "background",
                background_rate,
                _BACKGROUND_CAPACITY,
                _PriorityBucket(background_rate * share, _BACKGROUND_CAPACITY, self._clock),
                self._clock,
                **common,
            )
        self._chats: dict[int | str, _ChatState] = {}
        self._prune_at = _PRUNE_AT

    async def initialize(self) -> None:
        """Connect the shared store, if any (the local buckets start full, bound lazily).

        A store that cannot be reached does not stop the bot: the first sends find out,
        log it and go on at the local share.
        """
        if self.store is not None:
            try:
                await asyncio.wait_for(self.store.start(), max(self.store_timeout, 2.0))
            except Exception as error:
                log.warning(
                    "shared rate store (%s) unreachable at start-up (%s)",
                    self.store.kind,
                    type(error).__name__,
                )

    async def shutdown(self) -> None:
        """Cancel whatever still waits for a token or a chat's turn and forget all state."""
        self._shared.close()
        self._background.close()
        for state in self._chats.values():
            for future in state.waiters:
                future.cancel()
        self._reset()
        if self.store is not None:
            await self.store.close()

    def waiting(self) -> int:
        """Requests queued in the buckets or for a chat's turn (for tests and metrics)."""
        in_chats = sum(not f.done() for s in self._chats.values() for f in s.waiters)
        return self._shared.waiters() + self._background.waiters() + in_chats

    # -- the BaseRateLimiter interface -----------------------------------------------------

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, _Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: dict[str, Any] | None,
    ) -> _Result:
        lane, max_retries = self._parse_args(rate_limit_args)
        if not is_message_endpoint(endpoint):
            self.stats["unlimited"] += 1
            return await callback(*args, **kwargs)
        chat = _chat_key(data.get("chat_id"))
        run = self._background_send if lane == BACKGROUND else self._reply_send
        return await metrics.count_send(
            lane, run(callback, args, kwargs, endpoint, chat, max_retries)
        )

    def _parse_args(self, rate_limit_args: dict[str, Any] | None) -> tuple[str, int]:
        if not rate_limit_args:
            return REPLY, self.max_retries
        unknown = set(rate_limit_args) - _ARG_KEYS
        if unknown:
            raise ValueError(f"unknown rate_limit_args: {sorted(unknown)}")
        lane = rate_limit_args.get("lane", REPLY)
        if lane not in _LANES:
            raise ValueError(f"unknown lane {lane!r} (expected one of {_LANES})")
        max_retries = int(rate_limit_args.get("max_retries", self.max_retries))
        return lane, max_retries

    # -- lanes -----------------------------------------------------------------------------

    async def _reply_send(
        self,
        callback: Callable[..., Coroutine[Any, Any, _Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        chat: int | str | None,
        max_retries: int,
    ) -> _Result:
        began = self._clock()
        in_flight = 0.0
        try:
            for attempt in range(max_retries + 1):
                await self._shared.acquire(priority=0)
                sent = self._clock()
                try:
                    result = await callback(*args, **kwargs)
                except RetryAfter as exc:
                    delay = retry_after_seconds(exc)
                    self._after_send(chat, delay)
                    if attempt == max_retries:
                        self._gave_up(endpoint, REPLY, max_retries)
                        raise
                    self._retrying(endpoint, REPLY, delay)
                    await asyncio.sleep(delay)
                    continue
                except BaseException:
                    self._after_send(chat, 0.0)
                    raise
                finally:
                    in_flight += self._clock() - sent
                self._after_send(chat, 0.0)
                self.stats["sent_reply"] += 1
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self.stats["wait_reply_s"] += self._clock() - began - in_flight

    async def _background_send(
        self,
        callback: Callable[..., Coroutine[Any, Any, _Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        chat: int | str | None,
        max_retries: int,
    ) -> _Result:
        began = self._clock()
        in_flight = 0.0
        state = self._chat_state(chat) if chat is not None else None
        try:
            if state is not None:
                await self._take_turn(state)
            try:
                for attempt in range(max_retries + 1):
                    if state is not None:
                        # Re-read after every sleep: a reply's 429 may push the slot back.
                        while (pause := state.next_at - self._clock()) > 0:
                            await asyncio.sleep(pause)
                    await self._background.acquire()
                    await self._shared.acquire(priority=1)
                    sent = self._clock()
                    try:
                        result = await callback(*args, **kwargs)
                    except RetryAfter as exc:
                        delay = retry_after_seconds(exc)
                        self._after_send(chat, delay)
                        if attempt == max_retries:
                            self._gave_up(endpoint, BACKGROUND, max_retries)
                            raise
                        self._retrying(endpoint, BACKGROUND, delay)
                        if state is None:
                            await asyncio.sleep(delay)
                        continue
                    except BaseException:
                        self._after_send(chat, 0.0)
                        raise
                    finally:
                        in_flight += self._clock() - sent
                    self._after_send(chat, 0.0)
                    self.stats["sent_background"] += 1
                    return result
                raise AssertionError("unreachable")  # pragma: no cover
            finally:
                if state is not None:
                    self._pass_turn(state)
        finally:
            self.stats["wait_background_s"] += self._clock() - began - in_flight

    def _retrying(self, endpoint: str, lane: str, delay: float) -> None:
        self.stats["retries_429"] += 1
        metrics.rate_limited()
        log.info("429 on %s (%s lane): retrying in %.1f s", endpoint, lane, delay)

    def _gave_up(self, endpoint: str, lane: str, max_retries: int) -> None:
        self.stats["gave_up_429"] += 1
        metrics.rate_limited()
        log.warning("429 on %s (%s lane) after %d retries: giving up", endpoint, lane, max_retries)

    # -- chats -----------------------------------------------------------------------------

    def _chat_state(self, chat: int | str) -> _ChatState:
        state = self._chats.get(chat)
        if state is None:
            if len(self._chats) >= self._prune_at:
                now = self._clock()
                self._chats = {k: s for k, s in self._chats.items() if not s.idle(now)}
                self._prune_at = max(_PRUNE_AT, 2 * len(self._chats))
            state = self._chats[chat] = _ChatState()
        return state

    def _after_send(self, chat: int | str | None, retry_after: float) -> None:
        """A send to ``chat`` just finished (or hit 429): its next background send waits at
        least 1/per_chat from now (measured from the end, so it also holds at Telegram's end
        whatever the request's latency), or ``retry_after`` after a 429."""
        if chat is None:
            return
        state = self._chat_state(chat)
        state.next_at = max(state.next_at, self._clock() + max(self._chat_gap, retry_after))

    async def _take_turn(self, state: _ChatState) -> None:
        if not state.busy:  # then every waiter left in the queue was cancelled
            state.busy = True
            state.waiters.clear()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(future)
        try:
            await future  # the turn is handed over with busy still set
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._pass_turn(state)
            raise

    def _pass_turn(self, state: _ChatState) -> None:
        while state.waiters:
            future = state.waiters.pop(0)
            if not future.done():
                future.set_result(None)
                return
        state.busy = False


def _chat_key(chat_id: Any) -> int | str | None:
    """Integer chat ids (also given as strings) as ints, ``@username`` as lower-case text."""
    if chat_id is None or isinstance(chat_id, bool):
        return None
    if isinstance(chat_id, int):
        return chat_id
    text = str(chat_id).strip()
    try:
        return int(text)
    except ValueError:
        return text.lower()
