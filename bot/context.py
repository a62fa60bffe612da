"""The services every handler and job reaches through `context.bot_data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.clock import Clock
from bot.db import Database
from bot.settings import Settings
from bot.templates import Renderer

if TYPE_CHECKING:
    from bot.catalog import Catalog

BOT_DATA_KEY = "services"


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    renderer: Renderer
    catalog: Catalog
    owns_db: bool = True
    extras: dict[str, object] = field(default_factory=dict)
