"""Telegram's retries and crashes: an update is done exactly when its effects are committed.

The bot talks to the Bot API emulator (the network edge). Where a delivery must be cut at a
precise point, the test hands the update to the Application the way the webhook path does
(`update_processor.process_update`) instead of through long polling.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import event, text
from sqlmodel import select
from telegram import Update

from bot.app import build_application
from bot.models import ChatState, Pledge, ProcessedUpdate
from bot.runtime import make_services
from bot.services import updates
from bot.settings import Settings
from tests import factories
from tests.dialog import label, say

USER = 701
ANSWER = "Tôi sẽ học tập và làm theo tấm gương đạo đức Hồ Chí Minh."
_ids = itertools.count(int(time.time()) % 100_000 * 1000)


@pytest.fixture
async def lan(svc, emulator, union):
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Nguyễn Thị Lan", "+84912111222"
        )
        await factories.link(session, svc, member, USER)
    return emulator.user(USER, first_name="Lan", started=True)


def text_update(app, body: str, update_id: int | None = None) -> Update:
    payload = {
        "update_id": update_id if update_id is not None else next(_ids),
        "message": {
            "message_id": next(_ids),
            "date": int(time.time()),
            "chat": {"id": USER, "type": "private", "first_name": "Lan"},
            "from": {"id": USER, "is_bot": False, "first_name": "Lan"},
            "text": body,
        },
    }
    if body.startswith("/"):
        payload["message"]["entities"] = [
            {"type": "bot_command", "offset": 0, "length": len(body.split()[0])}
        ]
    return Update.de_json(payload, app.bot)


async def deliver(app, update: Update) -> None:
    """What the webhook endpoint does with a request's update."""
    await app.update_processor.process_update(update, app.process_update(update))


@pytest.fixture
async def app(svc, emulator):
    """The real Application, initialised against the emulator but not polling."""
    svc.owns_db = False
    application = build_application(svc)
    await application.initialize()
    await application.start()
    yield application
    await application.stop()
    await application.shutdown()


async def draft_and_step(svc) -> tuple[dict, int | None]:
    async with svc.db.reader() as session:
        [pledge] = (await session.exec(select(Pledge))).all()
        state = (await session.exec(select(ChatState))).first()
    return pledge.draft, state.step if state else None


async def done(svc, update_id: int) -> int:
    async with svc.db.reader() as session:
        rows = (await session.exec(select(ProcessedUpdate))).all()
    return len([r for r in rows if r.update_id == update_id])


async def test_a_duplicate_delivery_has_one_effect_and_one_reply(svc, bot, lan, emulator):
    await say(svc, lan, "/pledge")
    update_id = await lan.send(ANSWER)
    first = await lan.replies_until_idle(idle=0.3)
    assert len(first) == 1  # "saved" and the next section, in one message
    emulator.redeliver(update_id)
    assert await lan.replies_until_idle(idle=0.3) == []
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)
    assert await done(svc, update_id) == 1


async def test_a_read_only_update_redelivered_is_answered_once(svc, bot, lan, emulator):
    update_id = await lan.send("/topic")
    assert len(await lan.replies_until_idle(idle=0.3)) == 1
    emulator.redeliver(update_id)
    assert await lan.replies_until_idle(idle=0.3) == []


async def test_killed_after_the_commit_the_redelivery_has_no_second_effect_but_an_answer(
    svc, bot, lan, emulator
):
    """The answer is stored, then its reply does not get out (nor the apology): as if the
    process died there. Telegram delivers the message again: it is not filed a second time
    (it would go in as section two), and Lan learns it was kept and sees where she is."""
    await say(svc, lan, "/pledge")
    emulator.fail_chat(USER, status=500, times=2, description="Internal Server Error")
    update_id = await lan.send(ANSWER)
    assert await lan.replies_until_idle(idle=0.5) == []
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)
    emulator.redeliver(update_id)
    # After the grace a delivery still at work would have had to answer in.
    reply = await lan.next_reply(timeout=updates.FIRST_DELIVERY_GRACE_S + 5)
    assert await lan.replies_until_idle(idle=0.5) == []
    assert "đã được lưu" in reply.text and "Bạn không cần gửi lại" in reply.text
    assert "Phần 2/" in reply.text  # the step after the one she answered
    data = [b["callback_data"] for row in reply.inline_keyboard for b in row]
    assert data and all(d.startswith("pl:") for d in data)  # the wizard's own buttons
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)  # not filed as section two
    # Answered now: a third delivery is dropped like any repeat.
    emulator.redeliver(update_id)
    assert await lan.replies_until_idle(idle=0.5) == []
    await updates_flushed(svc)
    async with svc.db.reader() as session:
        [mark] = (await session.exec(
            select(ProcessedUpdate).where(ProcessedUpdate.update_id == update_id)
        )).all()
    assert mark.answered_at is not None


async def test_a_lost_answer_to_submit_points_to_the_pledge_filed_once(svc, bot, lan, emulator):
    """The pledge is filed, but neither the confirmation nor the apology reaches Lan. The
    press comes again: it files nothing more, and she is told where to see her pledge."""
    await say(svc, lan, "/pledge")
    for n in range(4):
        await say(svc, lan, f"{ANSWER} ({n + 1})")
    emulator.fail_chat(USER, status=500, times=None, description="Internal Server Error",
                       methods={"sendMessage", "editMessageText"})
    update_id = await lan.press(label(svc, "submit"))
    await lan.wait_callback_answer()
    await asyncio.sleep(1.0)
    emulator.clear_faults(USER)
    async with svc.db.reader() as session:
        [pledge] = (await session.exec(select(Pledge))).all()
    assert pledge.status == "submitted" and pledge.current_version == 1
    emulator.redeliver(update_id)
    reply = await lan.next_reply(timeout=updates.FIRST_DELIVERY_GRACE_S + 5)
    assert "đã được lưu" in reply.text and "/mypledge" in reply.text
    assert not reply.inline_keyboard
    assert await lan.replies_until_idle(idle=0.5) == []
    async with svc.db.reader() as session:
        [pledge] = (await session.exec(select(Pledge))).all()
    assert pledge.current_version == 1  # not filed a second time


async def updates_flushed(svc) -> None:
    """Wait for the answered marks' group commit."""
    await asyncio.sleep(updates.GROUP_COMMIT_DELAY_S * 3)


async def test_an_update_answered_elsewhere_is_dropped_here_without_a_word(
    svc, bot, lan, emulator
):
    """The mark says answered (by another process, or before a restart): nothing is sent."""
    await say(svc, lan, "/pledge")
    update_id = await lan.send(ANSWER)
    assert len(await lan.replies_until_idle(idle=0.3)) == 1
    await updates_flushed(svc)
    async with svc.db.reader() as session:
        [mark] = (await session.exec(
            select(ProcessedUpdate).where(ProcessedUpdate.update_id == update_id)
        )).all()
    assert mark.answered_at is not None  # a written update's mark records its answer too


async def _hold_the_chat(svc):
    """A transaction of another process holding what the handler must write (the SQLite
    write lock; on PostgreSQL the chat's state row)."""
    conn = await svc.db.engine.connect()
    await conn.begin()
    if not svc.db.sqlite:
        await conn.execute(text("SELECT identity_id FROM chatstate FOR UPDATE"))
    return conn


async def test_killed_before_the_commit_the_redelivery_is_handled_in_full(svc, lan, app):
    await deliver(app, text_update(app, "/pledge"))
    await lan.replies_until_idle(idle=0.2)
    update = text_update(app, ANSWER)
    holder = await _hold_the_chat(svc)
    try:
        task = asyncio.create_task(deliver(app, update))
        await asyncio.sleep(0.5)  # the handler is waiting on the database
        assert not task.done()
        task.cancel()  # the process dies here
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await holder.rollback()
        await holder.close()
    await asyncio.sleep(0.3)
    assert await done(svc, update.update_id) == 0
    assert await draft_and_step(svc) == ({}, 0)
    assert await lan.replies_until_idle(idle=0.2) == []

    await deliver(app, text_update(app, ANSWER, update.update_id))  # Telegram retries
    replies = await lan.replies_until_idle(idle=0.3)
    assert len(replies) == 1
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)
    assert await done(svc, update.update_id) == 1


async def test_two_processes_given_the_same_update_at_once_have_one_effect(
    svc, settings, clock, lan, app
):
    await deliver(app, text_update(app, "/pledge"))
    await lan.replies_until_idle(idle=0.2)
    other_svc = make_services(settings, clock=clock)  # its own engines, as another process
    other = build_application(other_svc)
    await other.initialize()
    await other.start()
    try:
        update_id = next(_ids)
        await asyncio.gather(
            deliver(app, text_update(app, ANSWER, update_id)),
            deliver(other, text_update(other, ANSWER, update_id)),
        )
        replies = await lan.replies_until_idle(idle=0.3)
    finally:
        await other.stop()
        await other.shutdown()
        await other_svc.db.dispose()
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)
    assert await done(svc, update_id) == 1
    assert len(replies) == 1  # one delivery's "saved" with the next section; no apology


async def _until_done(svc, update_id: int) -> None:
    """A read-only update's mark is group-committed a moment after its reply."""
    for _ in range(50):
        if await done(svc, update_id):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"update {update_id} never marked done")


async def test_pruning_forgets_old_updates_and_a_recent_retry_is_still_dropped(
    svc, bot, lan, emulator, clock
):
    retention = timedelta(hours=svc.settings.dedupe_retention_hours)
    assert retention == timedelta(hours=48)
    old_id = await lan.send("/topic")
    assert len(await lan.replies_until_idle(idle=0.3)) == 1
    await _until_done(svc, old_id)
    clock.advance(timedelta(hours=30))
    await say(svc, lan, "/pledge")
    recent_id = await lan.send(ANSWER)
    assert len(await lan.replies_until_idle(idle=0.3)) == 1
    clock.advance(timedelta(hours=20))  # the first update is 50 hours old, the answer 20

    assert await updates.prune(svc.db, clock.now(), retention) == 1
    assert await done(svc, old_id) == 0
    assert await done(svc, recent_id) == 1
    emulator.redeliver(recent_id)  # a late retry within the retention has no second effect
    assert await lan.replies_until_idle(idle=0.3) == []
    assert await draft_and_step(svc) == ({"thought": ANSWER}, 1)
    assert await updates.prune(svc.db, clock.now(), retention) == 0  # nothing left to prune


async def test_pruning_goes_in_batches_and_keeps_ids_without_a_time(svc, clock):
    now = clock.now()
    rows = [
        {"update_id": n, "processed_at": now - timedelta(hours=49, minutes=n)}
        for n in range(25)
    ]
    rows += [
        {"update_id": 100, "processed_at": now - timedelta(hours=47)},
        {"update_id": 101, "processed_at": now},
        {"update_id": 102, "processed_at": None},  # age unknown: kept
    ]
    async with svc.db.engine.begin() as conn:
        await conn.execute(ProcessedUpdate.__table__.insert(), rows)
    batches: list[int] = []

    def count_batches(conn, *_args) -> None:
        batches.append(1)

    event.listen(svc.db.engine.sync_engine, "commit", count_batches)
    try:
        assert await updates.prune(svc.db, now, timedelta(hours=48), batch=10) == 25
    finally:
        event.remove(svc.db.engine.sync_engine, "commit", count_batches)
    assert len(batches) == 3  # 10, 10, then 5: each its own short transaction
    async with svc.db.reader() as session:
        kept = sorted(row.update_id for row in (await session.exec(select(ProcessedUpdate))).all())
    assert kept == [100, 101, 102]


@pytest.mark.parametrize("hours", ["24", "12", "0", "-5"])
def test_a_retention_telegram_could_outlast_is_refused(hours):
    with pytest.raises(ValidationError, match="must be more than 24") as refused:
        Settings(CHUYENDE_DEDUPE_RETENTION_HOURS=hours, _env_file=None)
    assert "CHUYENDE_DEDUPE_RETENTION_HOURS" in str(refused.value)
    accepted = Settings(CHUYENDE_DEDUPE_RETENTION_HOURS="25", _env_file=None)
    assert accepted.dedupe_retention_hours == 25


async def test_done_marks_under_a_steady_stream_go_in_few_transactions_and_none_is_lost(
    svc, clock
):
    """Marks that come while one transaction writes wait for company again: a steady
    stream of read-only updates costs a few transactions a second, not one per handful."""
    marks = updates.DoneMarks(svc.db)
    transactions = itertools.count()
    event.listen(svc.db.engine.sync_engine, "commit", lambda _conn: next(transactions))
    began = time.perf_counter()
    ids = range(9_000_000, 9_000_300)
    for update_id in ids:  # 300 updates over about 0.6 s
        marks.add("telegram", update_id, clock.now())
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - began
    await marks.close()
    written = next(transactions)
    assert written <= elapsed / updates.GROUP_COMMIT_DELAY_S + 2
    async with svc.db.reader() as session:
        stored = (
            await session.exec(select(ProcessedUpdate.update_id).where(
                ProcessedUpdate.update_id.in_(ids)  # type: ignore[attr-defined]
            ))
        ).all()
    assert sorted(stored) == list(ids)
