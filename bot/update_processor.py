"""Updates from different chats run concurrently; updates from one chat run in order.

PTB processes updates one at a time by default, so a single reply held up (a 429's
retry_after, a slow query) stalls every other member; with plain `concurrent_updates` two
messages typed quickly in one chat could be handled out of order. This processor keeps a
FIFO lock per chat: other chats go on, and one chat's wizard steps stay in the order typed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from bot.services import updates


class PerChatUpdateProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int = 64) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        # The scope lets the dedupe guard mark the update done with its effects, or after
        # the handlers if they wrote nothing (bot.services.updates).
        with updates.scope():
            await self._in_chat_order(update, coroutine)

    async def _in_chat_order(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        key = chat.id
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                await coroutine
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # forget idle chats, so the dict stays small
                del self._waiting[key]
                self._locks.pop(key, None)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release: locks belong to updates still running."""
