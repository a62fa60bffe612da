"""What sharing the send budget costs per send: memory vs Redis vs PostgreSQL stores.

The limiter's own cost, with the HTTP request replaced by a no-op coroutine and a per-bot
rate so high that nothing ever waits for a token, so what is left is bookkeeping and the
store's round trips:

* quiet: one reply at a time (each pays a full round trip to the store);
* busy: many background sends at once to distinct chats (grants of up to `grant` tokens
  serve several sends per round trip).

Prints medians over --runs and each store's ratio to the in-memory limiter of the same run.
Redis or PostgreSQL is skipped with a message when it cannot be reached; the PostgreSQL
database (--pg-url) is created when missing. A grant is at most the bucket's burst (3 for the
shared bucket, 1 for the background one), so busy background sends still cost about two
round trips each; at Telegram's 30/s that is 60 round trips a second for all processes.

    .venv/bin/python bench/rate_store.py [--runs 5] [--quiet 2000] [--busy 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Callable

from bot.ratelimit import BACKGROUND, LaneRateLimiter
from bot.ratestore import PostgresRateStore, RateStore, RedisRateStore

HUGE = 1e7  # tokens a second: never waits, so only the overhead is timed


async def _nothing() -> bool:
    return True


async def _quiet(limiter: LaneRateLimiter, n: int) -> float:
    began = time.perf_counter()
    for i in range(n):
        await limiter.process_request(_nothing, (), {}, "sendMessage", {"chat_id": i}, None)
    return (time.perf_counter() - began) / n


async def _busy(limiter: LaneRateLimiter, n: int) -> float:
    args = {"lane": BACKGROUND}
    began = time.perf_counter()
    await asyncio.gather(
        *(
            limiter.process_request(_nothing, (), {}, "sendMessage", {"chat_id": i}, args)
            for i in range(n)
        )
    )
    return (time.perf_counter() - began) / n


async def _ensure_database(url: str) -> None:
    """Create the benchmark's database if it is missing (through the server's `postgres`)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from bot.db import asyncpg_connect_args

    name = make_url(url).database
    try:
        conn = await asyncpg.connect(**asyncpg_connect_args(url), timeout=3)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(
            **asyncpg_connect_args(str(make_url(url).set(database="postgres"))), timeout=3
        )
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    except Exception:
        return  # reported as unreachable below
    else:
        await conn.close()


async def _reachable(make: Callable[[], RateStore]) -> str | None:
    store = make()
    try:
        await asyncio.wait_for(store.start(), 3)
    except Exception as error:
        return type(error).__name__
    finally:
        await store.close()
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quiet", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/bench_rate_store"
    )
    opts = parser.parse_args()
    prefix = f"bench:{secrets.token_hex(4)}:"
    await _ensure_database(opts.pg_url)
    stores: dict[str, Callable[[], RateStore] | None] = {
        "memory": None,
        "redis": lambda: RedisRateStore(opts.redis_url, prefix=prefix),
        "postgres": lambda: PostgresRateStore(opts.pg_url, prefix=prefix),
    }
    figures: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for name, make in stores.items():
        if make is not None and (why := await _reachable(make)) is not None:
            print(f"{name}: skipped, unreachable ({why})")
            continue
        quiet, busy, trips = [], [], []
        for _ in range(opts.runs):
            limiter = LaneRateLimiter(per_bot=HUGE, per_chat=HUGE, store=make() if make else None)
            await limiter.initialize()
            quiet.append(await _quiet(limiter, opts.quiet))
            before = limiter.stats["store_grants"]
            busy.append(await _busy(limiter, opts.busy))
            trips.append((limiter.stats["store_grants"] - before) / opts.busy)
            await limiter.shutdown()
        figures[name] = (quiet, busy, trips)

    base_quiet = statistics.median(figures["memory"][0])
    base_busy = statistics.median(figures["memory"][1])
    print(f"runs={opts.runs} quiet={opts.quiet} sequential replies, busy={opts.busy} at once")
    print(
        f"{'store':<10}{'quiet µs/send':>15}{'x memory':>10}{'busy µs/send':>15}"
        f"{'x memory':>10}{'trips/send (busy)':>19}"
    )
    for name, (quiet, busy, trips) in figures.items():
        q, b = statistics.median(quiet), statistics.median(busy)
        print(
            f"{name:<10}{q * 1e6:>15.1f}{q / base_quiet:>10.1f}{b * 1e6:>15.1f}"
            f"{b / base_busy:>10.1f}{statistics.median(trips):>19.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
