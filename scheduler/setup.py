"""APScheduler wiring: a few interval ticks in the bot's event loop, and the outbox worker.

Only interval triggers: a tick at start-up, then about every minute. Each tick asks the
database what is due by the bot's Clock; cron or date triggers would follow the wall clock
and ignore CHUYENDE_NOW.

Several processes may share one database. The outbox worker runs in every one of them (rows
are claimed under a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so each is sent once).
The periodic jobs (planning tick, broadcast tick, daily ANALYZE, hourly pruning of old update
ids) run only in the process
that holds the leadership lock (bot/leader.py): becoming leader adds them with an immediate
first run, stepping down removes them and cancels a run in progress. Others hook into the
same moments through `Background.leadership` (see `leadership()`), e.g.
`leadership(app).on_elected(callback)`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from telegram.ext import Application

from bot import metrics
from bot.context import BOT_DATA_KEY, Services
from bot.leader import Leadership
from bot.ratelimit import BACKGROUND_SHARE
from bot.services import updates
from scheduler.broadcasts import tick as broadcast_tick
from scheduler.notices import plan_tick
from scheduler.outbox_worker import OutboxWorker

logger = logging.getLogger(__name__)
TICK_SECONDS = 60
RUNTIME_KEY = "background"
PRUNE_HOURS = 1
PERIODIC_JOBS = ("plan", "analyze", "prune_updates")


@dataclass
class Background:
    scheduler: AsyncIOScheduler
    worker: OutboxWorker
    worker_task: asyncio.Task
    leadership: Leadership
    periodic: PeriodicJobs


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


async def _prune_updates(svc: Services) -> None:
    """Forget update ids older than the retention: Telegram will not deliver them again."""
    retention = timedelta(hours=svc.settings.dedupe_retention_hours)
    try:
        deleted = await updates.prune(svc.db, svc.clock.now(), retention)
    except Exception:
        logger.exception("pruning handled update ids failed")
        return
    if deleted:
        logger.info("pruned %d handled update ids older than %s", deleted, retention)


class PeriodicJobs:
    """The leader-only jobs: added on election (first run at once), removed on stepping down."""

    def __init__(self, scheduler: AsyncIOScheduler, svc: Services, worker: OutboxWorker) -> None:
        self.scheduler = scheduler
        self.svc = svc
        self.worker = worker
        self._running: set[asyncio.Task] = set()

    async def _guarded(self, job, *args) -> None:
        # Remember the run so stepping down can cancel it: once another process leads, this
        # one must not go on planning beside it.
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job(*args)
        finally:
            self._running.discard(task)

    async def start(self) -> None:
        now = datetime.now()
        self.scheduler.add_job(
            self._guarded,
            IntervalTrigger(seconds=TICK_SECONDS),
            args=(_tick, self.svc, self.worker),
            id="plan",
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guarded,
            IntervalTrigger(hours=24),
            args=(_analyze, self.svc),
            id="analyze",
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )
        self.scheduler.add_job(
            self._guarded,
            IntervalTrigger(hours=PRUNE_HOURS),
            args=(_prune_updates, self.svc),
            id="prune_updates",
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    async def stop(self) -> None:
        for job_id in PERIODIC_JOBS:
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
        running, self._running = self._running, set()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    @property
    def active(self) -> bool:
        return all(self.scheduler.get_job(job_id) is not None for job_id in PERIODIC_JOBS)


def claim_batch(per_bot_rate: float) -> int:
    """Rows one process claims at a time: about two seconds of the background lane.

    With several processes on one outbox, a process that claimed 100 rows at 24/s would
    keep them from the others for seconds, and a crash would leave them all waiting out
    the lease; two seconds' worth keeps every process busy and strands little.
    """
    return max(10, min(100, round(per_bot_rate * BACKGROUND_SHARE * 2)))


async def start_background(
    application: Application, leadership: Leadership | None = None
) -> Background:
    """Start the outbox worker here and contend for the periodic jobs.

    `leadership` defaults to one on the bot's database with the configured intervals; a
    process that is alone on it leads before this returns, so its first tick runs at once.
    """
    svc: Services = application.bot_data[BOT_DATA_KEY]
    worker = OutboxWorker(svc, application.bot, batch=claim_batch(svc.settings.per_bot_rate))
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
    scheduler.start()
    if leadership is None:
        leadership = Leadership.for_database(
            svc.settings.database_url,
            retry_seconds=svc.settings.leader_retry_seconds,
            check_seconds=svc.settings.leader_check_seconds,
        )
    periodic = PeriodicJobs(scheduler, svc, worker)
    leadership.on_elected(periodic.start)
    leadership.on_deposed(periodic.stop)
    leadership.on_elected(metrics.became_leader)
    leadership.on_deposed(metrics.stepped_down)
    background = Background(
        scheduler,
        worker,
        asyncio.create_task(worker.run_forever()),
        leadership,
        periodic,
    )
    application.bot_data[RUNTIME_KEY] = background
    await leadership.start()
    return background


def leadership(application: Application) -> Leadership | None:
    """This process's leadership, once the background has started (None without it)."""
    background: Background | None = application.bot_data.get(RUNTIME_KEY)
    return background.leadership if background is not None else None


async def stop_background(application: Application) -> None:
    background: Background | None = application.bot_data.pop(RUNTIME_KEY, None)
    if background is None:
        return
    await background.leadership.stop()  # stops the periodic jobs and frees the lock
    background.scheduler.shutdown(wait=False)
    background.worker.stop()
    await background.worker_task
