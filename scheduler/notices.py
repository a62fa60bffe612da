"""The periodic planning tick: ask the database what is due, render it, queue it."""

from __future__ import annotations

import logging
from typing import Any

from bot import metrics
from bot.context import Services
from bot.models import NoticeKind, OwedBy
from bot.services import reminders
from bot.telegram_html import split_message

logger = logging.getLogger(__name__)


def _render(svc: Services, notice: reminders.Notice) -> tuple[str, dict[str, Any] | None]:
    """The notice's text in the recipient's language, and its button, if any."""
    from handlers.common import button_label

    locale = notice.recipient.locale or svc.settings.locale
    text = svc.renderer.text(
        notice.template, locale, name=notice.recipient.full_name, **notice.context
    )
    # One outbox row is one Telegram message; a long officer list keeps its first part and
    # says how many more there are (the template does), rather than being cut mid-tag.
    text = split_message(text)[0]
    markup = None
    if notice.kind == NoticeKind.reminder and notice.deadline.owed_by == OwedBy.member:
        label = button_label(svc, locale, "open_pledge")
        markup = {"inline_keyboard": [[{"text": label, "callback_data": "pl:open"}]]}
    return text, markup


async def plan_tick(svc: Services) -> int:
    """One tick: decide, render and queue every notice due now; returns how many were queued."""
    now = svc.clock.now()
    async with svc.db.session() as session:
        plan = await reminders.plan(session, svc.catalog, now, svc.clock.tz)
        metrics.reminders_planned(plan)
        if not plan.notices and not plan.skipped and not plan.swept:
            return 0
        texts = {notice.dedupe_key: _render(svc, notice) for notice in plan.notices}
        queued = await reminders.record(session, plan, texts, now)
    if queued:
        logger.info("queued %d notices", queued)
    return queued
