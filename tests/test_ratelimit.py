"""LaneRateLimiter against the Bot API emulator, through a real PTB ExtBot over HTTP.

Rates are raised (per_bot=100) to keep the file short; every timing is read from the
emulator's delivery timestamps (monotonic, taken when a send is accepted), never slept for.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import itertools
import time
import warnings
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import Forbidden, RetryAfter
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from bot.channels.emulator import BotApiEmulator
from bot.ratelimit import (
    BACKGROUND,
    LaneRateLimiter,
    is_message_endpoint,
    retry_after_seconds,
)

TOKEN = "123456:TEST"
BG: dict[str, Any] = {"lane": BACKGROUND}
TOLERANCE = 0.15


@pytest.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotApiEmulator]:
    # Without PTB_TIMEDELTA, PTB 22 builds every RetryAfter through a deprecated int attribute,
    # and warnings are errors in this test suite.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    emulator = BotApiEmulator(token=TOKEN)
    await emulator.start()
    yield emulator
    await emulator.stop()


@asynccontextmanager
async def limited_bot(
    emu: BotApiEmulator, **limits: Any
) -> AsyncIterator[tuple[ExtBot[Any], LaneRateLimiter]]:
    limiter = LaneRateLimiter(**limits)
    bot = ExtBot(
        TOKEN,
        base_url=emu.api_base_url,
        base_file_url=emu.file_base_url,
        rate_limiter=limiter,
        # As ApplicationBuilder does: many connections, so the pool is not a second queue.
        request=HTTPXRequest(connection_pool_size=64),
    )
    async with bot:
        yield bot, limiter
    assert limiter.waiting() == 0


async def open_chats(emu: BotApiEmulator, chat_ids: Iterable[int]) -> None:
    """A private chat exists for the bot once the person wrote to it."""
    for chat_id in chat_ids:
        await emu.user(chat_id).send("hi")


def times_of(emu: BotApiEmulator, chat_ids: Iterable[int]) -> list[float]:
    wanted = set(chat_ids)
    return [d.monotonic for d in emu.deliveries if d.chat_id in wanted]


def rate(times: list[float]) -> float:
    """Sends a second between the first and the last of ``times``."""
    return (len(times) - 1) / (times[-1] - times[0])


def texts(emu: BotApiEmulator, chat_id: int) -> list[str]:
    return [m.text for m in emu.user(chat_id).bot_messages]


# ---------------------------------------------------------------------------------------------
# Background lane: per chat and overall
# ---------------------------------------------------------------------------------------------


async def test_background_sends_to_one_chat_are_spaced_per_chat(emu):
    await open_chats(emu, [1001])
    emu.set_rate_limits(per_chat=1, per_bot=None, window=1 / 5)  # Telegram's rule, enforced
    async with limited_bot(emu, per_bot=100, per_chat=5) as (bot, limiter):
        await asyncio.gather(
            *(bot.send_message(1001, f"n{i}", rate_limit_args=BG) for i in range(6))
        )
    times = times_of(emu, [1001])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"per-chat gaps (s): {[round(g, 4) for g in gaps]}")
    assert min(gaps) >= 1 / 5
    assert max(gaps) < 1 / 5 * 2  # paced, not stalled (tight figures belong to bench/)
    assert texts(emu, 1001) == [f"n{i}" for i in range(6)]  # in order
    assert not emu.rejections
    assert limiter.stats["sent_background"] == 6


async def test_background_to_many_chats_runs_at_its_share_of_the_bot_rate(emu):
    chats = range(2001, 2101)
    await open_chats(emu, chats)
    emu.set_rate_limits(per_chat=1, per_bot=100)
    async with limited_bot(emu, per_bot=100, background_share=0.8) as (bot, limiter):
        await asyncio.gather(*(bot.send_message(c, "digest", rate_limit_args=BG) for c in chats))
    measured = rate(times_of(emu, chats))
    print(f"background rate over {len(chats)} chats: {measured:.1f}/s (target 80/s)")
    # The ceiling is the contract; the floor only guards against a limiter that stalls (the
    # rate achieved is measured properly in bench/, on a quiet machine).
    assert 80 * 0.5 <= measured <= 80 * (1 + TOLERANCE)
    assert not emu.rejections
    assert limiter.stats["sent_background"] == len(chats)
    assert limiter.stats["wait_background_s"] > 0


async def test_replies_are_paced_only_by_the_bot_rate_and_come_before_background(emu):
    background_chats = range(2001, 2061)
    await open_chats(emu, [1001, *background_chats])
    # Telegram's per-bot limit with room for the burst (a token bucket lets burst + rate through
    # in the worst second); no per-chat limit, as replies are not paced per chat.
    emu.set_rate_limits(per_chat=None, per_bot=100 + 3)
    async with limited_bot(emu, per_bot=100, per_chat=1, burst=3) as (bot, limiter):
        # Two messages of one reply go out back to back: replies are not limited per chat.
        await bot.send_message(1001, "first part")
        await bot.send_message(1001, "second part")
        pair = times_of(emu, [1001])
        # Then a flood of both lanes: together they may not pass per_bot, replies go first.
        background = [
            asyncio.create_task(bot.send_message(c, "digest", rate_limit_args=BG))
            for c in background_chats
        ]
        await asyncio.gather(*(bot.send_message(1001, f"r{i}") for i in range(40)))
        await asyncio.gather(*background)
    assert pair[1] - pair[0] < 0.05
    replies = times_of(emu, [1001])[2:]
    everything = times_of(emu, [1001, *background_chats])[2:]
    background_times = times_of(emu, background_chats)
    reply_rate, total_rate = rate(replies[3:]), rate(everything[3:])  # after the burst
    print(
        f"reply pair gap {pair[1] - pair[0]:.4f} s; flood: replies {reply_rate:.1f}/s, "
        f"both lanes {total_rate:.1f}/s; background sends during the reply flood: "
        f"{sum(t <= replies[-1] for t in background_times)} of {len(background_times)}"
    )
    assert total_rate <= 100 * (1 + TOLERANCE)
    assert 100 * 0.5 <= reply_rate <= 100 * (1 + TOLERANCE)
    # The background lane only got the tokens the replies left (it waited in priority 1).
    assert sum(t <= replies[-1] for t in background_times) <= 3
    assert limiter.stats["sent_reply"] == 42
    assert not emu.rejections


# ---------------------------------------------------------------------------------------------
# Replies first
# ---------------------------------------------------------------------------------------------


async def test_a_reply_overtakes_300_queued_background_sends(emu):
    background_chats = range(3001, 3301)
    await open_chats(emu, [1001, *background_chats])
    async with limited_bot(emu, per_bot=100) as (bot, limiter):
        queued = [
            asyncio.create_task(bot.send_message(c, "broadcast", rate_limit_args=BG))
            for c in background_chats
        ]
        await asyncio.wait(queued[:20])  # the background lane is flowing (FIFO)
        latencies = []
        for i in range(5):
            waiting_before = limiter.waiting()
            started = time.monotonic()
            await bot.send_message(1001, f"reply {i}")
            delivered = times_of(emu, [1001])[-1]
            latencies.append(delivered - started)
            assert waiting_before >= 240
            await asyncio.wait(queued[20 + 5 * i : 25 + 5 * i])  # some background in between
        sent_meanwhile = limiter.stats["sent_background"]
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
    print(
        f"reply latency with ~{300 - sent_meanwhile} background sends queued: "
        f"max {max(latencies) * 1000:.1f} ms, all {[round(x * 1000, 1) for x in latencies]} ms"
    )
    assert max(latencies) < 0.1
    assert limiter.stats["sent_reply"] == 5
    assert len(times_of(emu, background_chats)) < 300  # the rest was still queued


# ---------------------------------------------------------------------------------------------
# 429, 403
# ---------------------------------------------------------------------------------------------


async def test_429_on_background_delays_only_that_chat(emu):
    flooded, others = 1001, range(4001, 4041)
    await open_chats(emu, [flooded, *others])
    emu.fail_chat(flooded, status=429, retry_after=1, times=2)
    async with limited_bot(emu, per_bot=100, per_chat=5) as (bot, limiter):
        started = time.monotonic()
        await asyncio.gather(
            bot.send_message(flooded, "reminder 1", rate_limit_args=BG),
            bot.send_message(flooded, "reminder 2", rate_limit_args=BG),
            *(bot.send_message(c, "reminder", rate_limit_args=BG) for c in others),
        )
    flooded_times = times_of(emu, [flooded])
    other_times = times_of(emu, others)
    print(
        f"429 x2 (retry_after=1): flooded chat delivered at +{flooded_times[0] - started:.3f} s; "
        f"other {len(other_times)} chats done by +{other_times[-1] - started:.3f} s "
        f"at {rate(other_times):.1f}/s"
    )
    assert texts(emu, flooded) == ["reminder 1", "reminder 2"]  # each exactly once, in order
    assert [r.status for r in emu.rejections] == [429, 429]
    assert flooded_times[0] - started >= 2.0
    assert flooded_times[1] - flooded_times[0] >= 1 / 5
    # 40 sends at 80/s take 0.5 s: nobody else waited for the flooded chat's retry_after.
    assert other_times[-1] - started < 1.5  # well before the flooded chat's 2 s of retries
    assert len(other_times) == len(others)
    assert limiter.stats["retries_429"] == 2
    assert limiter.stats["sent_background"] == 42


async def test_429_on_a_reply_delays_only_that_reply(emu):
    await open_chats(emu, [1001, 1002, 1003])
    emu.fail_chat(1001, status=429, retry_after=1, times=1)
    async with limited_bot(emu, per_bot=100) as (bot, limiter):
        started = time.monotonic()
        await asyncio.gather(
            bot.send_message(1001, "slow"),
            bot.send_message(1002, "fast"),
            bot.send_message(1003, "digest", rate_limit_args=BG),
        )
    (slow,), (fast,), (digest,) = (times_of(emu, [c]) for c in (1001, 1002, 1003))
    others = max(fast, digest) - started
    print(f"reply 429: that reply +{slow - started:.3f} s, others +{others:.3f} s")
    assert texts(emu, 1001) == ["slow"]
    assert slow - started >= 1.0
    assert others < 0.1
    assert limiter.stats["retries_429"] == 1


async def test_429_is_raised_after_max_retries(emu):
    await open_chats(emu, [1001, 1002, 1003])
    for chat in (1001, 1002, 1003):
        emu.fail_chat(chat, status=429, retry_after=1, times=None)
    async with limited_bot(emu, per_bot=100, per_chat=10, max_retries=2) as (bot, limiter):
        started = time.monotonic()
        outcomes = await asyncio.gather(
            bot.send_message(1001, "reply"),
            bot.send_message(1002, "reminder", rate_limit_args=BG),
            bot.send_message(1003, "once", rate_limit_args={**BG, "max_retries": 0}),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
    assert all(isinstance(outcome, RetryAfter) for outcome in outcomes)
    attempts = {c: sum(r.chat_id == c for r in emu.rejections) for c in (1001, 1002, 1003)}
    print(f"max_retries=2: gave up after {elapsed:.3f} s; attempts per chat {attempts}")
    assert attempts == {1001: 3, 1002: 3, 1003: 1}
    assert 2.0 <= elapsed < 2.5
    assert limiter.stats["retries_429"] == 4
    assert limiter.stats["gave_up_429"] == 3
    assert not emu.deliveries


async def test_403_propagates_unchanged(emu):
    await open_chats(emu, [1001, 1002, 1003])
    await emu.user(1001).block_bot()
    emu.fail_chat(1002, status=403, times=1)
    async with limited_bot(emu, per_bot=100, per_chat=10) as (bot, limiter):
        with pytest.raises(Forbidden, match="blocked"):
            await bot.send_message(1001, "reminder", rate_limit_args=BG)
        with pytest.raises(Forbidden, match="blocked"):
            await bot.send_message(1001, "reply")
        with pytest.raises(Forbidden):
            await bot.send_message(1002, "reminder", rate_limit_args=BG)
        # The chat's turn was given back: the next background send to it goes through.
        await bot.send_message(1002, "reminder again", rate_limit_args=BG)
        await bot.send_message(1003, "others are fine", rate_limit_args=BG)
    assert [r.status for r in emu.rejections] == [403, 403, 403]  # one attempt each
    assert texts(emu, 1002) == ["reminder again"]
    assert limiter.stats["retries_429"] == 0
    assert limiter.stats["sent_background"] == 2


# ---------------------------------------------------------------------------------------------
# What is not limited
# ---------------------------------------------------------------------------------------------


async def test_non_message_endpoints_are_not_limited(emu):
    await open_chats(emu, [1001])
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("OK", callback_data="ok")]])
    async with limited_bot(emu, per_bot=2, burst=1) as (bot, limiter):
        await bot.send_message(1001, "press", reply_markup=keyboard)  # takes the only token
        for _ in range(5):
            await emu.user(1001).press("OK")
        queries = [u.callback_query for u in await bot.get_updates() if u.callback_query]
        # The next send has to wait 0.5 s for a token; meanwhile everything else goes through.
        waiting_send = asyncio.create_task(bot.send_message(1001, "later"))
        started = time.monotonic()
        for query in queries:
            await bot.answer_callback_query(query.id, text="ok")
        for _ in range(20):
            await bot.get_me()
        await bot.set_my_commands([("start", "Bắt đầu")])
        for _ in range(5):
            await bot.send_chat_action(1001, "typing")
        unlimited_done = time.monotonic()
        await waiting_send
    later = times_of(emu, [1001])[-1]
    print(
        f"31 unlimited calls took {(unlimited_done - started) * 1000:.1f} ms "
        f"while a send waited {later - started:.3f} s for its token"
    )
    assert len(queries) == 5
    assert len(emu.user(1001).callback_answers) == 5
    assert unlimited_done < later
    assert unlimited_done - started < 0.4
    assert later - started >= 0.4
    assert limiter.stats["unlimited"] >= 31
    assert limiter.stats["sent_reply"] == 2


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------


def test_retry_after_in_seconds_from_timedelta_or_int(monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    assert retry_after_seconds(RetryAfter(dtm.timedelta(seconds=2.5))) == 2.5
    monkeypatch.delenv("PTB_TIMEDELTA")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)  # PTB's own constructor warns
        as_int = RetryAfter(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading it must not warn
        assert retry_after_seconds(as_int) == 3.0

    class OldRetryAfter:  # an int-only attribute, as before PTB 22.2
        retry_after = 4

    assert retry_after_seconds(OldRetryAfter()) == 4.0  # type: ignore[arg-type]


def test_message_endpoints():
    for endpoint in ("sendMessage", "sendPhoto", "sendDocument", "editMessageText"):
        assert is_message_endpoint(endpoint)
    for endpoint in ("editMessageReplyMarkup", "copyMessage", "forwardMessage", "sendVoice"):
        assert is_message_endpoint(endpoint)
    for endpoint in ("sendChatAction", "getUpdates", "answerCallbackQuery", "getMe"):
        assert not is_message_endpoint(endpoint)
    assert not is_message_endpoint("setMyCommands")


async def test_bad_arguments_are_refused(emu):
    with pytest.raises(ValueError, match="background_share"):
        LaneRateLimiter(background_share=1.5)
    await open_chats(emu, [1001])
    async with limited_bot(emu) as (bot, _limiter):
        with pytest.raises(ValueError, match="unknown lane"):
            await bot.send_message(1001, "x", rate_limit_args={"lane": "backgruond"})
        with pytest.raises(ValueError, match="unknown rate_limit_args"):
            await bot.send_message(1001, "x", rate_limit_args={"priority": 1})
    assert not emu.deliveries


async def test_shutdown_releases_whatever_still_waits(emu):
    chats = range(5001, 5021)
    await open_chats(emu, chats)
    async with limited_bot(emu, per_bot=10) as (bot, limiter):
        queued = [asyncio.create_task(bot.send_message(c, "x", rate_limit_args=BG)) for c in chats]
        await asyncio.wait(queued[:1])
        assert limiter.waiting() > 10
        await limiter.shutdown()
        outcomes = await asyncio.gather(*queued, return_exceptions=True)
        assert limiter.waiting() == 0
        # And it works again afterwards.
        await limiter.initialize()
        await bot.send_message(5001, "again", rate_limit_args=BG)
    assert sum(isinstance(o, asyncio.CancelledError) for o in outcomes) > 10
