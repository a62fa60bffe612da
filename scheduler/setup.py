"""APScheduler wiring: a few interval ticks in the bot's event loop, and the outbox worker.

Only interval triggers: a tick at start-up, then about every minute. Each tick asks the
database what is due by the bot's Clock; cron or date triggers would follow the wall clock
and ignore CHUYENDE_NOW.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from telegram.ext import Application

from bot.context import BOT_DATA_KEY, Services
from scheduler.broadcasts import tick as broadcast_tick
from scheduler.notices import plan_tick
from scheduler.outbox_worker import OutboxWorker

logger = logging.getLogger(__name__)
TICK_SECONDS = 60
RUNTIME_KEY = "background"


@dataclass
class Background:
    scheduler: AsyncIOScheduler
    worker: OutboxWorker
    worker_task: asyncio.Task


async def _tick(svc: Services, worker: OutboxWorker) -> None:
    try:
        if await plan_tick(svc):
            worker.wake()
    except Exception:  # one failed tick must not stop the next one
        logger.exception("planning tick failed")
    try:
        if await broadcast_tick(svc, worker.bot):
            worker.wake()
    except Exception:
        logger.exception("broadcast tick failed")


async def _analyze(svc: Services) -> None:
    """Daily planner statistics, so the due-member queries keep their good plans."""
    try:
        await svc.db.analyze()
    except Exception:
        logger.exception("ANALYZE failed")


async def start_background(application: Application) -> Background:
    svc: Services = application.bot_data[BOT_DATA_KEY]
    worker = OutboxWorker(svc, application.bot)
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    scheduler.add_job(
        _tick,
        IntervalTrigger(seconds=TICK_SECONDS),
        args=(svc, worker),
        id="plan",
        next_run_time=datetime.now(),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        _analyze,
        IntervalTrigger(hours=24),
        args=(svc,),
        id="analyze",
        next_run_time=datetime.now(),
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    background = Background(scheduler, worker, asyncio.create_task(worker.run_forever()))
    application.bot_data[RUNTIME_KEY] = background
    return background


async def stop_background(application: Application) -> None:
    background: Background | None = application.bot_data.pop(RUNTIME_KEY, None)
    if background is None:
        return
    background.scheduler.shutdown(wait=False)
    background.worker.stop()
    await background.worker_task
