"""Where several bot processes keep their shared per-bot send budget: Redis or PostgreSQL.

Telegram's ~30 messages a second are per bot, not per process, so three processes must
share one budget. :class:`~bot.ratelimit.LaneRateLimiter` asks a store for tokens in small
grants (at most as many as it has sends waiting, so nothing is hoarded) and keeps its lanes,
its per-chat spacing and its 429 handling in the process.

Both stores run the same GCRA (generic cell rate algorithm): a bucket is a single number,
its "theoretical arrival time" ``tat``. With ``T = 1/rate`` and ``tau = burst * T``, a
request for ``want`` tokens at ``now`` gets ``k = floor((now + tau - max(tat, now)) / T)``
of them (0..want), and ``tat`` moves to ``max(tat, now) + k*T``. Over any interval of ``d``
seconds at most ``burst + rate * d`` tokens are handed out, across every process.

A request may also take the tokens that fall due within the next ``ahead`` seconds (``tau +
ahead`` in place of ``tau`` in ``k``): the caller then spends token ``i`` of the ``k`` only
``wait - (k - i) * T`` seconds after the answer, ``wait`` being the seconds until the token
after them. Each token keeps its own slot in the one sequence, so the bound holds; what
changes is that at a high rate one round trip brings a round trip's worth of tokens, where
the burst alone (3) would make every third send wait for the store. The clock
is the store's own (Redis ``TIME``, PostgreSQL ``statement_timestamp()``), so the hosts'
clocks need not agree.

* :class:`RedisRateStore`: one key per bucket, updated by a Lua script (atomic in Redis), one
  round trip per grant.
* :class:`PostgresRateStore`: one row per bucket in an UNLOGGED table, updated by a single
  ``UPDATE … RETURNING`` (the row lock makes concurrent grants queue; the SET expressions
  are re-evaluated on the newest row). The table is created on first use rather than by a
  migration: it holds no data worth keeping (a lost bucket just starts full again), and
  UNLOGGED spares the write-ahead log a write per grant.

A store that cannot be reached raises; the limiter then falls back to a conservative local
share (see bot/ratelimit.py) and tries the store again a few seconds later.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import asyncpg

from bot.db import asyncpg_connect_args
from bot.ratelimit import LaneRateLimiter

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = [
    "PostgresRateStore",
    "RateStore",
    "RedisRateStore",
    "limiter_for",
    "store_for",
]

# Floats of the bucket arithmetic may land a hair under a whole token.
_EPSILON = 1e-9

_GCRA_LUA = """
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local ahead = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local k = math.floor((now + tau + ahead - tat) / T + 1e-9)
if k > want then k = want end
if k < 0 then k = 0 end
tat = tat + k * T
-- The key outlives its last grant only as long as it matters (then the bucket is full).
local ttl = math.ceil((tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', ttl)
return {k, string.format('%.6f', tat + T - tau - now)}
"""


class RateStore(Protocol):
    """A shared token bucket per name; ``take`` never waits for tokens."""

    kind: str

    async def start(self) -> None: ...

    async def take(
        self, bucket: str, rate: float, burst: float, want: int, ahead: float = 0.0
    ) -> tuple[int, float]:
        """Up to ``want`` tokens of ``bucket`` (``rate``/s, at most ``burst`` at once), those
        due within ``ahead`` seconds included.

        Returns how many were granted and the seconds until the token after them is due
        (0 when it already is); token ``i`` of ``k`` is due ``(k - i) / rate`` before that.
        """
        ...

    async def close(self) -> None: ...


class RedisRateStore:
    """GCRA buckets in Redis through redis-py's asyncio client."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "chuyende:rate:", *, timeout: float = 0.5):
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._client = None
        self._script = None

    async def start(self) -> None:
        from redis.asyncio import Redis

        if self._client is None:
            self._client = Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                health_check_interval=30,
            )
            self._script = self._client.register_script(_GCRA_LUA)
        await self._client.ping()

    async def take(
        self, bucket: str, rate: float, burst: float, want: int, ahead: float = 0.0
    ) -> tuple[int, float]:
        if self._script is None:
            await self.start()
        granted, wait = await self._script(
            keys=[self.prefix + bucket], args=[1.0 / rate, burst / rate, want, ahead]
        )
        return int(granted), max(0.0, float(wait))

    async def close(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """A store connection given back to its pool: asyncpg's own reset would run its reset
    query, a round trip a grant, for a session that never changes (no SET, LISTEN, locks
    or cursors; an open transaction is still rolled back by the pool)."""


class PostgresRateStore:
    """GCRA buckets as rows of an UNLOGGED table, on a small asyncpg pool of their own."""

    kind = "postgres"
    TABLE = "chuyende_rate_bucket"

    _CREATE = f"""
        CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (
            name text PRIMARY KEY,
            tat double precision NOT NULL,
            granted integer NOT NULL
        )
    """
    _ADD = f"INSERT INTO {TABLE} (name, tat, granted) VALUES ($1, 0, 0) ON CONFLICT DO NOTHING"
    # $1 name, $2 T (seconds per token), $3 tau (burst * T), $4 want, $5 ahead. Both SET
    # expressions see the same old row, so `granted` is the k that moved `tat`.
    _TAKE = f"""
        UPDATE {TABLE} SET
            granted = LEAST($4::int, GREATEST(0, floor(
                (n.now + $3::float8 + $5::float8 - GREATEST(tat, n.now)) / $2::float8
                + {_EPSILON})))::int,
            tat = GREATEST(tat, n.now) + $2::float8 * LEAST($4::int, GREATEST(0, floor(
                (n.now + $3::float8 + $5::float8 - GREATEST(tat, n.now)) / $2::float8
                + {_EPSILON})))
        FROM (SELECT extract(epoch FROM statement_timestamp())::float8 AS now) AS n
        WHERE name = $1
        RETURNING granted, tat + $2::float8 - $3::float8 - n.now AS wait
    """

    def __init__(self, url: str, prefix: str = "", *, timeout: float = 0.5) -> None:
        self._connect_args = asyncpg_connect_args(url)
        self.prefix = prefix
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._known: set[str] = set()
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._pool is not None:
                return
            pool = await asyncpg.create_pool(
                **self._connect_args, min_size=1, max_size=2, timeout=max(self.timeout, 2.0),
                reset=_keep_session,
            )
            try:
                async with pool.acquire() as conn:
                    await conn.execute(self._CREATE)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                pass  # another process created it at the same moment
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def take(
        self, bucket: str, rate: float, burst: float, want: int, ahead: float = 0.0
    ) -> tuple[int, float]:
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        name = self.prefix + bucket
        if name not in self._known:
            await self._pool.execute(self._ADD, name, timeout=self.timeout)
            self._known.add(name)
        row = await self._pool.fetchrow(
            self._TAKE, name, 1.0 / rate, burst / rate, want, ahead, timeout=self.timeout
        )
        if row is None:  # the row went away (the table was dropped and made again)
            self._known.discard(name)
            return 0, 0.0
        return int(row["granted"]), max(0.0, float(row["wait"]))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._known.clear()
        if pool is not None:
            await pool.close()


def store_for(settings: Settings) -> RateStore | None:
    """The store that settings name (None: this process keeps the budget in memory).

    Buckets are named after the bot's numeric id (the public part of its token), so two bots
    on one Redis or database never share a budget.
    """
    backend = settings.resolved_rate_backend
    if backend == "memory":
        return None
    token = settings.telegram_bot_token
    bot_id = token.get_secret_value().split(":", 1)[0] if token is not None else "bot"
    if backend == "redis":
        assert settings.redis_url is not None  # the settings validator saw to it
        return RedisRateStore(settings.redis_url, prefix=f"chuyende:rate:{bot_id}:")
    return PostgresRateStore(settings.database_url, prefix=f"{bot_id}:")


def limiter_for(settings: Settings) -> LaneRateLimiter:
    """The bot's rate limiter: per_bot_rate, shared through the configured store."""
    return LaneRateLimiter(
        per_bot=settings.per_bot_rate, store=store_for(settings), processes=settings.processes
    )
