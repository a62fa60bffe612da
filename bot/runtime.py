"""Assembles the services from settings: the one place that knows how the parts fit."""

from __future__ import annotations

from datetime import datetime

from bot.catalog import default_content_dir, load_catalog
from bot.clock import Clock
from bot.context import Services
from bot.db import Database
from bot.settings import Settings
from bot.templates import Renderer


def make_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: Database | None = None,
    now: datetime | None = None,
) -> Services:
    content_dir = default_content_dir()
    return Services(
        settings=settings,
        db=db or Database(settings.database_url),
        clock=clock or Clock(settings.tz, start=now or settings.now),
        renderer=Renderer(content_dir / "templates", settings.locale, settings.tz),
        catalog=load_catalog(content_dir),
        owns_db=db is None,
    )
