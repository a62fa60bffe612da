"""Callers' requests gathered while one batch runs, to go together in the next.

Both of SQLite's group paths are this (bot.write_batch for writes, bot.read_batch for
reads): the first request starts a drain task; whatever arrives while a batch runs waits
for the next one, so batches grow with the load; each caller gets its own outcome, or the
error that stopped its whole batch.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    """Requests queued, run a batch at a time by `_run` (which sets each one's future)."""

    max_items = 256

    def __init__(self) -> None:
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._running = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests handed over and not answered yet."""
        return len(self._pending) + self._running

    async def _submit(self, item: Item) -> Any:
        """Queue `item`; its outcome once its batch ran (an exception outcome is raised)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        """Wait for the batches under way (before the engine that runs them is disposed)."""
        if self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._pending:
            limit = self.max_items
            batch, self._pending = self._pending[:limit], self._pending[limit:]
            self._running = len(batch)
            try:
                await self._run(batch)
            except Exception as error:  # the batch as a whole failed: each caller is told
                for _, future in batch:
                    if not future.done():
                        future.set_result(self._failed(error))
            finally:
                self._running = 0

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        raise NotImplementedError

    def _failed(self, error: Exception) -> BaseException:
        """What a caller is given when its batch failed whole."""
        return error
