"""The Prometheus metrics of one bot process: this module owns every metric object.

Other modules only call the functions below (one-line hooks), so the names and labels live
in one place. The registry is our own, not prometheus-client's global one, so /metrics shows
exactly these series and nothing a library registered on import.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from telegram.error import Forbidden

logger = logging.getLogger(__name__)
T = TypeVar("T")

REGISTRY = CollectorRegistry()

UPDATES = Counter(
    "chuyende_updates",
    "Updates received by webhook, by kind (message, callback_query...) and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "chuyende_handler_seconds",
    "Time from receiving an update to having processed it (replies sent).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
SENDS = Counter(
    "chuyende_sends",
    "Message sends and edits through the rate limiter, by lane (reply, background) and result.",
    ["lane", "result"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "chuyende_rate_limited", "429 Too Many Requests answers received.", registry=REGISTRY
)
OUTBOX_DEPTH = Gauge(
    "chuyende_outbox_depth",
    "Outbox messages still to go (pending or claimed), read at scrape time.",
    registry=REGISTRY,
)
REMINDERS_DUE = Gauge(
    "chuyende_reminders_due",
    "Members due a reminder at the last planning tick (only the process running the ticks).",
    registry=REGISTRY,
)
LEADER = Gauge(
    "chuyende_leader",
    "1 while this process holds the periodic-jobs lock (runs the ticks, owns setWebhook).",
    registry=REGISTRY,
)

# Outcomes of an update, as the webhook answered it.
HANDLED = "handled"  # processed, 200
ERROR = "error"  # a handler failed for good; the person got the apology, 200
RETRY = "retry"  # a transient (database) failure, 503: Telegram delivers it again
REJECTED = "rejected"  # wrong or missing secret, 403
MALFORMED = "malformed"  # not JSON or not an Update, 400
UNAVAILABLE = "unavailable"  # arrived while shutting down, 503


def record_update(kind: str, outcome: str, seconds: float | None = None) -> None:
    UPDATES.labels(kind=kind, outcome=outcome).inc()
    if seconds is not None:
        HANDLER_SECONDS.observe(seconds)


_send_counters: dict[tuple[str, str], Counter] = {}


def _sends(lane: str, result: str) -> Counter:
    # labels() takes a lock and builds a key on every call; every send passes here.
    counter = _send_counters.get((lane, result))
    if counter is None:
        counter = _send_counters[(lane, result)] = SENDS.labels(lane=lane, result=result)
    return counter


async def count_send(lane: str, sending: Awaitable[T]) -> T:
    """Await one send and count its result: sent, blocked (403) or failed (anything else)."""
    try:
        result = await sending
    except Forbidden:
        _sends(lane, "blocked").inc()
        raise
    except Exception:
        _sends(lane, "failed").inc()
        raise
    _sends(lane, "sent").inc()
    return result


async def became_leader() -> None:
    LEADER.set(1)


async def stepped_down() -> None:
    LEADER.set(0)


def rate_limited() -> None:
    RATE_LIMITED.inc()


def reminders_planned(plan) -> None:
    """From the planning tick: how many reminders its plan holds (a bot/services/reminders
    Plan); queued at once, so this is the number due at that tick."""
    from bot.models import NoticeKind

    REMINDERS_DUE.set(sum(1 for notice in plan.notices if notice.kind == NoticeKind.reminder))


async def refresh_outbox_depth(db) -> None:
    """Read the outbox depth now; on a database failure the last value stays (and is logged)."""
    from bot.services import outbox

    try:
        async with db.reader() as session:
            OUTBOX_DEPTH.set(await outbox.depth(session))
    except Exception as error:
        logger.warning("outbox depth not refreshed: %s", type(error).__name__)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
