"""Three bot processes' limiters share one per-bot budget through Redis or PostgreSQL.

Each "process" is a LaneRateLimiter with its own store client (its own Redis connection or
asyncpg pool) and its own PTB ExtBot over HTTP; all send to one Bot API emulator, whose
delivery timestamps are the measure. Redis and PostgreSQL are the real services: the Redis
case runs when TEST_REDIS_URL (default redis://127.0.0.1:6379/0) answers, the PostgreSQL case
when TEST_DATABASE_URL names a reachable PostgreSQL; otherwise they are skipped with the
reason printed. An outage is a real address where nothing listens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.channels.emulator import BotApiEmulator
from bot.ratelimit import BACKGROUND, TAKE_AHEAD_SECONDS, LaneRateLimiter
from bot.ratestore import PostgresRateStore, RateStore, RedisRateStore, limiter_for, store_for
from bot.settings import Settings
from tests.services import postgres_url_or_skip

TOKEN = "123456:TEST"
BG: dict[str, Any] = {"lane": BACKGROUND}
RATE = 40.0  # per bot, for all three together
BURST = 3.0
PROCESSES = 3
# Sends are counted when the emulator accepts them, a few ms after the grant; that jitter
# can move a send or two across a window's edge. The budget itself allows BURST + RATE * 1 s.
TOLERANCE = 0.05 * RATE
WINDOW = 1.0


def max_in_window(times: list[float], window: float = WINDOW) -> int:
    """The most sends in any sliding window of ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_max_in_window_counts_sliding_windows():
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0, 0.99] and [0.5, 1.5)
    assert max_in_window([0.0, 2.0, 4.0]) == 1


async def _redis_url() -> str:
    from redis.asyncio import Redis

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as error:
        print(f"skipped: Redis unreachable at the test URL ({type(error).__name__})")
        pytest.skip(f"Redis unreachable ({type(error).__name__})")
    finally:
        await client.aclose()
    return url


@pytest.fixture(params=["redis", "postgres"])
async def make_store(request: pytest.FixtureRequest) -> Callable[[], RateStore]:
    """A factory of store clients sharing buckets that belong to this test alone."""
    prefix = f"leader:test:{secrets.token_hex(4)}:"
    if request.param == "redis":
        url = await _redis_url()
        return lambda: RedisRateStore(url, prefix=prefix)
    url = await postgres_url_or_skip()
    return lambda: PostgresRateStore(url, prefix=prefix)


@pytest.fixture
async def emu(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotApiEmulator]:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # else PTB warns on every RetryAfter
    emulator = BotApiEmulator(token=TOKEN)
    await emulator.start()
    yield emulator
    await emulator.stop()


async def _bots(
    stack: AsyncExitStack, emu: BotApiEmulator, limiters: list[LaneRateLimiter]
) -> list[ExtBot[Any]]:
    bots = []
    for limiter in limiters:
        bot = ExtBot(
            TOKEN,
            base_url=emu.api_base_url,
            base_file_url=emu.file_base_url,
            rate_limiter=limiter,
            request=HTTPXRequest(connection_pool_size=64),
        )
        await stack.enter_async_context(bot)  # initialize() connects the limiter's store
        bots.append(bot)
    return bots


async def _open_chats(emu: BotApiEmulator, chat_ids: range) -> None:
    for chat_id in chat_ids:
        await emu.user(chat_id).send("hi")


async def _run_three(
    emu: BotApiEmulator, limiters: list[LaneRateLimiter], per_process: int, replies: int
) -> tuple[list[float], list[float], list[float]]:
    """Each limiter sends ``per_process`` background messages to chats of its own and
    ``replies`` replies spread over the run; returns (all send times, reply waits, bg times)."""
    chats = range(5001, 5001 + per_process * len(limiters))
    await _open_chats(emu, chats)
    first_seq = len(emu.deliveries)
    waits: list[float] = []
    async with AsyncExitStack() as stack:
        bots = await _bots(stack, emu, limiters)

        async def reply(bot: ExtBot[Any], n: int) -> None:
            await asyncio.sleep(0.15 * n)
            began = time.monotonic()
            await bot.send_message(9000 + n % 3, "reply")
            waits.append(time.monotonic() - began)

        await _open_chats(emu, range(9000, 9003))
        first_seq = len(emu.deliveries)
        jobs = []
        for p, bot in enumerate(bots):
            mine = chats[p * per_process : (p + 1) * per_process]
            jobs += [bot.send_message(c, f"bg {c}", rate_limit_args=BG) for c in mine]
            jobs += [reply(bot, n) for n in range(replies)]
        await asyncio.gather(*jobs)
        for limiter in limiters:
            assert limiter.waiting() == 0
    sent = emu.deliveries[first_seq:]
    background = [d.monotonic for d in sent if d.chat_id < 9000]
    return [d.monotonic for d in sent], waits, background


async def test_three_processes_stay_within_the_per_bot_rate_together(emu, make_store):
    limiters = [
        LaneRateLimiter(per_bot=RATE, burst=BURST, store=make_store(), processes=PROCESSES)
        for _ in range(PROCESSES)
    ]
    times, waits, background = await _run_three(emu, limiters, per_process=40, replies=8)
    peak = max_in_window(times)
    span = background[-1] - background[0]
    bg_rate = (len(background) - 1) / span
    kind = limiters[0].store.kind
    print(
        f"{kind}: {len(times)} sends, peak {peak} in {WINDOW:g} s (limit {RATE:g} + burst "
        f"{BURST:g} + tolerance {TOLERANCE:g}); background {bg_rate:.1f}/s "
        f"(share {0.8 * RATE:g}/s); reply wait median {statistics.median(waits) * 1000:.1f} ms "
        f"max {max(waits) * 1000:.1f} ms; grants {sum(x.stats['store_grants'] for x in limiters)}"
    )
    assert len(times) == 3 * 40 + 3 * 8
    assert peak <= RATE + BURST + TOLERANCE
    # Shared, not merely slow: background ran near its share of the one budget ...
    assert 0.8 * RATE * 0.6 <= bg_rate <= 0.8 * RATE * 1.1
    # ... and replies came first: none waited anywhere near a background send's queue time.
    assert max(waits) < 1.0
    assert all(x.stats["store_errors"] == 0 for x in limiters)
    assert sum(x.stats["sent_reply"] for x in limiters) == 24


async def test_without_a_shared_store_three_processes_would_exceed_the_rate(emu):
    """The control: the same load on three memory limiters breaks the per-bot rate."""
    limiters = [LaneRateLimiter(per_bot=RATE, burst=BURST) for _ in range(PROCESSES)]
    times, _, _ = await _run_three(emu, limiters, per_process=40, replies=0)
    peak = max_in_window(times)
    print(f"memory, three processes: peak {peak} in {WINDOW:g} s")
    assert peak > RATE + BURST + TOLERANCE


async def test_a_grant_takes_the_tokens_due_within_its_horizon_and_no_more(make_store):
    """At 1,000/s with a burst of 3, a round trip brings the burst, or with 20 ms ahead the
    burst and the 20 tokens due meanwhile; the bucket's clock moves on by each of them."""
    store = make_store()
    await store.start()
    try:
        now_only = await store.take("now", 1000.0, 3.0, 100)
        ahead = await store.take("ahead", 1000.0, 3.0, 100, 0.02)
        small = await store.take("small", 1000.0, 3.0, 5, 0.02)
        after = await store.take("ahead", 1000.0, 3.0, 100)
    finally:
        await store.close()
    assert now_only[0] == 3 and now_only[1] <= 0.001 + 1e-6
    granted, wait = ahead
    assert granted == 23
    # The token after them is due 21 ms on (20 of the 23 were due later than now).
    assert 0.019 <= wait <= 0.0215
    assert small[0] == 5  # never more than asked for
    assert after[0] == 0 and after[1] > 0.015  # those 20 ms are spent: nothing now


@pytest.mark.parametrize("rate", [300.0, 20_000.0])
async def test_tokens_taken_ahead_keep_the_shared_rate_and_spare_round_trips(
    emu, make_store, rate
):
    """Three processes sending 180 replies at once. At 300/s together the rate is the limit:
    tokens taken ahead are paced out, so no 0.1 s holds more than the rate and burst allow,
    plus what one process held ahead if its loop fell behind. At 20,000/s (above what these
    sends reach) a round trip serves the sends waiting, not the burst's three at most."""
    window = 0.1
    limiters = [
        LaneRateLimiter(per_bot=rate, burst=BURST, store=make_store(), processes=PROCESSES)
        for _ in range(PROCESSES)
    ]
    chats = range(6001, 6001 + 3 * 60)
    await _open_chats(emu, chats)
    first_seq = len(emu.deliveries)
    async with AsyncExitStack() as stack:
        bots = await _bots(stack, emu, limiters)
        await asyncio.gather(*(
            bot.send_message(chat, "reply")
            for p, bot in enumerate(bots) for chat in chats[p * 60 : (p + 1) * 60]
        ))
    sent = [d.monotonic for d in emu.deliveries[first_seq:]]
    peak = max_in_window(sent, window)
    grants = sum(x.stats["store_grants"] for x in limiters)
    print(f"{limiters[0].store.kind}: 180 sends at {rate:g}/s, peak {peak} in {window:g} s, "
          f"{grants} store round trips")
    assert len(sent) == 180
    if rate * window < 180:
        # Paced, a quiet run peaks at 32-33. The bound adds the tokens a late process may
        # send at once (6 at 300/s) and 2 for the emulator's timestamps' jitter. Without the
        # shared store the three would send about 3 * 30 in 0.1 s.
        held_ahead = rate * TAKE_AHEAD_SECONDS
        assert peak <= rate * window + BURST + held_ahead + 2
    else:
        assert grants < 180 / BURST


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_store_outage_does_not_stop_replies(emu, kind, caplog):
    """Nothing listens on the store's address: replies still go, at the local share."""
    if kind == "redis":
        store: RateStore = RedisRateStore("redis://127.0.0.1:1/0", prefix="leader:down:")
    else:
        store = PostgresRateStore("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    limiter = LaneRateLimiter(per_bot=RATE, burst=BURST, store=store, processes=PROCESSES)
    await _open_chats(emu, range(7001, 7021))
    first_seq = len(emu.deliveries)
    caplog.set_level(logging.WARNING, logger="bot.ratelimit")
    async with AsyncExitStack() as stack:
        [bot] = await _bots(stack, emu, [limiter])
        began = time.monotonic()
        await asyncio.gather(*(bot.send_message(c, "reply") for c in range(7001, 7021)))
        took = time.monotonic() - began
    sent = [d.monotonic for d in emu.deliveries[first_seq:]]
    share = RATE / PROCESSES
    print(f"{kind} down: 20 replies in {took:.2f} s at the local share of {share:.1f}/s")
    assert len(sent) == 20
    assert max_in_window(sent) <= share + BURST  # the conservative share, not the full rate
    assert limiter.stats["store_errors"] >= 1
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]  # logged once


def test_the_backend_follows_the_settings_an_operator_expects():
    base = {"TELEGRAM_BOT_TOKEN": "42:secret", "_env_file": None}
    alone = Settings(DATABASE_URL="sqlite+aiosqlite:///bot.db", **base)
    assert alone.resolved_rate_backend == "memory" and store_for(alone) is None
    shared = Settings(DATABASE_URL="postgresql+asyncpg://postgres@db/bot", **base)
    assert isinstance(store_for(shared), PostgresRateStore)
    assert store_for(shared).prefix == "42:"  # the bot id, never the token's secret part
    fast = Settings(
        DATABASE_URL="postgresql+asyncpg://postgres@db/bot",
        CHUYENDE_REDIS_URL="redis://cache:6379/0",
        CHUYENDE_PROCESSES=4,
        **base,
    )
    store = store_for(fast)
    assert isinstance(store, RedisRateStore) and "secret" not in store.prefix
    assert limiter_for(fast).processes == 4
    pinned = Settings(
        DATABASE_URL="postgresql+asyncpg://postgres@db/bot", CHUYENDE_RATE_BACKEND="memory", **base
    )
    assert store_for(pinned) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHUYENDE_RATE_BACKEND": "redis"}, "needs CHUYENDE_REDIS_URL"),
        ({"CHUYENDE_RATE_BACKEND": "postgres"}, "needs a PostgreSQL DATABASE_URL"),
        ({"CHUYENDE_RATE_BACKEND": "etcd"}, "CHUYENDE_RATE_BACKEND"),
        ({"CHUYENDE_PROCESSES": "0"}, "CHUYENDE_PROCESSES"),
    ],
)
def test_a_backend_without_its_service_is_refused_with_a_clear_message(env, message):
    with pytest.raises(ValueError, match=message):
        Settings(DATABASE_URL="sqlite+aiosqlite:///bot.db", _env_file=None, **env)
