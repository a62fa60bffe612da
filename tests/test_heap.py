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

from bot import heap
from bot.app import build_application

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


async def test_the_application_keeps_nothing_per_member_it_has_seen(svc, emulator):
    """PTB would keep the chat and user id of every update (for a persistence the bot does
    not have): with 1,000,000 members, a set of each that only grows."""
    svc.owns_db = False
    application = build_application(svc)
    await application.initialize()
    await application.start()
    try:
        members = [emulator.user(880_000 + n, first_name=f"ĐV{n}", started=True)
                   for n in range(300)]
        for n in range(300):
            user = {"id": 880_000 + n, "is_bot": False, "first_name": f"ĐV{n}"}
            update = Update.de_json(
                {
                    "update_id": 990_000 + n,
                    "message": {
                        "message_id": n + 1,
                        "date": 1_712_000_000,
                        "chat": {"id": user["id"], "type": "private", "first_name": "ĐV"},
                        "from": user,
                        "text": "/help",
                        "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
                    },
                },
                application.bot,
            )
            await application.update_processor.process_update(
                update, application.process_update(update)
            )
    finally:
        await application.stop()
        await application.shutdown()
    assert all(member.bot_messages for member in members)  # each was answered
    # PTB's own sets, the only handle there is on them:
    assert not application._chat_ids_to_be_updated_in_persistence
    assert not application._user_ids_to_be_updated_in_persistence
    assert not application.chat_data and not application.user_data
