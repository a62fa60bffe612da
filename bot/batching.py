"""Callers' requests gathered while one batch runs, to go together in the next.

Both of SQLite's group paths are this (bot.write_batch for writes, bot.read_batch for
reads): the first request starts a drain task; whatever arrives while a batch runs waits
for the next one, so batches grow with the load; each caller gets its own outcome, or the
error that stopped its whole batch. A batch is one function on a connection's aiosqlite
thread (bot.sqlite_driver), in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    """Requests (each a sequence of statements) queued, and run a batch at a time as
    `function(sqlite3_connection, items)` on a connection of `engine`, which returns each
    item's outcome."""

    max_items = 256

    def __init__(self, engine: Any, function: Callable[[Any, list[Item]], list[Any]]) -> None:
        self._engine = engine
        self._function = function
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._running = 0
        self._task: asyncio.Task[None] | None = None
        # Done so far (bench/throughput.py prints them): transactions, the requests in
        # them, and their statements (each request's, and each BEGIN and COMMIT).
        self.batches = 0
        self.turns = 0
        self.statements = 0

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
        async with self._engine.connect() as connection:
            pooled = await connection.get_raw_connection()
            # A request cancelled while its batch waited for the connection (its update is
            # being abandoned) is withdrawn: a turn's writes only go in if it can still
            # reply after them.
            live = [(item, future) for item, future in batch if not future.done()]
            items = [item for item, _ in live]
            if not live:
                return
            outcomes = await pooled.dbapi_connection.run_on_thread(self._function, items)
        self.batches += 1
        self.turns += len(live)
        self.statements += 2 + sum(len(item) for item in items)  # type: ignore[arg-type]
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if not future.done():  # cancelled while it ran: what it did stands
                future.set_result(outcome)

    def _failed(self, error: Exception) -> BaseException:
        """What a caller is given when its batch failed whole."""
        return error
