"""Broadcasts in the planning tick: queue the scheduled ones that are due, send reports.

A delivery report is a document, which the text outbox cannot carry, so the tick sends it
itself through the background lane. It is sent first and marked after (Broadcast.reported_at):
a crash between the two repeats one report, a failed send is tried again on the next tick,
and none is lost.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import Bot, InputFile
from telegram.error import Forbidden, TelegramError

from bot.context import Services
from bot.services import broadcasts
from scheduler.outbox_worker import BACKGROUND

logger = logging.getLogger(__name__)


async def queue_scheduled(svc: Services) -> int:
    """Scheduled broadcasts whose send_at the clock has passed: their rows are queued."""
    from handlers.broadcast import message_renderer

    async with svc.db.session() as session:
        queued = await broadcasts.queue_due(
            session, message_renderer(svc), svc.clock.now(), svc.clock.tz
        )
    if queued:
        logger.info("queued %d broadcast messages", queued)
    return queued


def _labels(svc: Services, locale: str) -> dict[str, str]:
    return svc.renderer.pairs("broadcast/xlsx_labels", locale)


async def send_reports(svc: Services, bot: Bot) -> int:
    """One report per settled broadcast to its sender, with the .xlsx of every recipient."""
    # Imported here, on first use: matplotlib, openpyxl and python-docx are ~70 MB of an idle bot.
    from bot.documents import delivery_xlsx
    async with svc.db.session() as session:
        reports = await broadcasts.settled(session)
    sent = 0
    for report in reports:
        broadcast_id = report.broadcast.id
        assert broadcast_id is not None
        if report.chat_id is not None:
            locale = report.locale or svc.settings.locale
            labels = _labels(svc, locale)
            headers = (labels["name"], labels["unit"], labels["status"])
            data = await asyncio.to_thread(
                delivery_xlsx.build, report.lines, labels["sheet"], headers, labels
            )
            caption = svc.renderer.text("broadcast/report", locale, report=report)
            try:
                await bot.send_document(
                    report.chat_id,
                    InputFile(data, filename=f"{labels['filename']}-{broadcast_id}.xlsx"),
                    caption=caption,
                    rate_limit_args=BACKGROUND,
                )
            except Forbidden:  # the sender blocked the bot: nobody to report to
                logger.warning("broadcast %s report: the sender blocked the bot", broadcast_id)
            except TelegramError:
                logger.exception("broadcast %s report not sent; next tick", broadcast_id)
                continue
        async with svc.db.session() as session:
            await broadcasts.mark_reported(session, broadcast_id, svc.clock.now())
        sent += 1
    return sent


async def tick(svc: Services, bot: Bot) -> int:
    """What the planning tick does for broadcasts; returns the rows queued."""
    queued = await queue_scheduled(svc)
    await send_reports(svc, bot)
    return queued
