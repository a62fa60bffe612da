"""The outbox: a crash mid-send loses nothing, errors are retried a bounded number of times."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from bot.models import OutboxMessage, OutboxStatus
from bot.services import outbox
from scheduler.outbox_worker import OutboxWorker
from tests.dialog import say


async def _queue(svc, users, kind="broadcast"):
    async with svc.db.session() as session:
        await outbox.enqueue(
            session,
            [
                outbox.Queued(f"{kind}:{u.id}", kind, None, str(u.id), f"Thông báo cho {u.id}")
                for u in users
            ],
            svc.clock.now(),
        )
        await session.commit()


async def _rows(svc):
    async with svc.db.reader() as session:
        return list((await session.exec(select(OutboxMessage))).all())


async def test_queueing_the_same_key_twice_keeps_one_row(svc, bot, emulator):
    user = emulator.user(901, started=True)
    await _queue(svc, [user])
    await _queue(svc, [user])
    assert len(await _rows(svc)) == 1


async def test_a_worker_that_died_mid_batch_loses_nothing(svc, bot, emulator):
    users = [emulator.user(910 + n, started=True) for n in range(6)]
    await _queue(svc, users)
    async with svc.db.session() as session:  # a process claims three, then dies
        claimed = await outbox.claim(session, "dead-worker", svc.clock.now(), limit=3)
    assert len(claimed) == 3
    worker = OutboxWorker(svc, bot.application.bot)
    assert await worker.drain() == 3  # the other three; the dead one's lease still holds
    svc.clock.advance(outbox.LEASE + timedelta(seconds=1))
    assert await worker.drain() == 3  # its lease ran out: they are taken over
    for user in users:
        [message] = await user.replies_until_idle(idle=0.05)
        assert message.text == f"Thông báo cho {user.id}"
    assert {row.status for row in await _rows(svc)} == {OutboxStatus.sent}


async def test_server_errors_are_retried_then_recorded_as_failed(svc, bot, emulator):
    user = emulator.user(920, started=True)
    emulator.fail_chat(user.id, status=502, times=None)
    await _queue(svc, [user])
    worker = OutboxWorker(svc, bot.application.bot)
    for _ in range(outbox.MAX_ATTEMPTS):
        await worker.drain()
        svc.clock.advance(outbox.RETRY_BACKOFF * outbox.MAX_ATTEMPTS)
    [row] = await _rows(svc)
    assert (row.status, row.attempts) == (OutboxStatus.failed, outbox.MAX_ATTEMPTS)
    assert row.last_error
    emulator.clear_faults()
    assert await worker.drain() == 0  # failed stays failed
    assert user.bot_messages == []


async def test_a_broadcast_does_not_hold_up_a_reply(svc, bot, emulator, union):
    """Background sends share the bot with replies; a member's answer comes first."""
    from tests import factories

    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Nguyễn Văn Tư", "+84912000999"
        )
        await factories.link(session, svc, member, 930)
    tu = emulator.user(930)
    await say(svc, tu, "/help")
    others = [emulator.user(1000 + n, started=True) for n in range(60)]
    await _queue(svc, others)
    import asyncio

    worker = OutboxWorker(svc, bot.application.bot)
    sending = asyncio.create_task(worker.drain())
    await asyncio.sleep(0.1)
    said = await say(svc, tu, "/mypledge")
    assert said.templates == ["pledge/mine"]
    assert not sending.done()  # the reply went out while the broadcast was still running
    await sending
    assert sum(len(u.bot_messages) for u in others) == 60
