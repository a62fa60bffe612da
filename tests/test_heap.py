"""A long-running bot gives the memory it has freed back to the system."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import re
import weakref
from pathlib import Path

import pytest
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, TypeHandler

from bot import heap
from bot.app import BotApplication, build_application

BLOCK = 4096
BLOCKS = 16_384  # 64 MB in blocks small enough to come from the heap, not from mmap
MB = 1024 * 1024


def resident() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s*(\d+)", status).group(1)) * 1024


class Statement:
    """Stands for a SQL statement built per call: its parts point at each other."""

    def __init__(self) -> None:
        self.parts = [self]
        self.payload = bytearray(MB)


async def test_garbage_in_cycles_is_collected_within_an_interval_without_a_full_pass_due():
    gc.disable()  # no pass of the collector's own: only the release may collect
    try:
        statement = Statement()
        gone = weakref.ref(statement)
        del statement
        await asyncio.sleep(0)
        assert gone() is not None  # a cycle: dropping the last name frees nothing
        releasing = asyncio.create_task(heap.release_forever(interval=0.01))
        await asyncio.sleep(0.1)
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.skipif(heap.malloc_trim() is None, reason="needs glibc's malloc_trim")
async def test_memory_freed_inside_the_heap_is_given_back_within_an_interval():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)
    # One block above the rest: free() shrinks a heap only from its top, so what a long load
    # frees below what it still holds stays resident.
    pinned = libc.malloc(BLOCK)
    try:
        for block in blocks:
            libc.free(block)
        held = resident()
        releasing = asyncio.create_task(heap.release_forever(interval=0.01))
        await asyncio.sleep(0.3)
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        assert resident() < held - 48 * MB
    finally:
        libc.free(pinned)


def _message_from(user_id: int, bot) -> Update:
    user = {"id": user_id, "is_bot": False, "first_name": "ĐV"}
    return Update.de_json(
        {
            "update_id": user_id,
            "message": {
                "message_id": 1,
                "date": 1_712_000_000,
                "chat": {"id": user_id, "type": "private", "first_name": "ĐV"},
                "from": user,
                "text": "xin chào",
            },
        },
        bot,
    )


async def _read(update: Update, context) -> None:
    """A handler that looks at the update and keeps nothing."""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_application_keeps_nothing_per_member_it_has_seen(svc):
    """PTB's Application keeps the chat and user id of every update it processes, for a
    persistence this bot does not have: with 1,000,000 members, two sets that only grow.
    The bot's does not. (One handler that only reads: the bookkeeping is PTB's own.)"""
    assert isinstance(build_application(svc), BotApplication)
    token = svc.settings.telegram_bot_token.get_secret_value()
    for cls, kept in ((Application, 300), (BotApplication, 0)):
        application = (
            ApplicationBuilder().application_class(cls).token(token)
            .base_url(svc.settings.bot_api_url).build()
        )
        application.add_handler(TypeHandler(Update, _read))
        await application.initialize()  # getMe, from the emulator
        try:
            for n in range(300):
                await application.process_update(_message_from(880_000 + n, application.bot))
        finally:
            await application.shutdown()
        # PTB's own sets, the only handle there is on them:
        assert len(application._chat_ids_to_be_updated_in_persistence) == kept, cls
        assert len(application._user_ids_to_be_updated_in_persistence) == kept, cls
