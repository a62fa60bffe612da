"""Three real bot processes on one PostgreSQL, the emulator delivering by webhook round-robin.

Skipped, with the reason printed by `-ra`, when TEST_DATABASE_URL (PostgreSQL) is not set.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from bot.channels.emulator import BotApiEmulator
from bot.db import Database, is_sqlite
from bot.models import OutboxMessage, OutboxStatus, Pledge, PledgeVersion
from bot.runtime import make_services
from bot.services import outbox
from bot.settings import Settings
from tests import factories
from tests.conftest import START, TOKEN
from tests.dialog import label
from tests.multiproc import REVIEW_MARK, SUBMITTED_MARK, BotFleet, file_pledge

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
pytestmark = pytest.mark.skipif(
    not PG_URL or is_sqlite(PG_URL),
    reason="multi-process tests need PostgreSQL: set TEST_DATABASE_URL=postgresql+asyncpg://…",
)

# Local time the bot processes start from: inside the campaign, before the pledge deadline.
NOW_LOCAL = START.astimezone(Settings().tz).replace(tzinfo=None).isoformat()
RATE = 10.0  # per bot, messages/s; the background lane keeps to 80% of it


def answers_for(n: int) -> list[str]:
    """Four sections, different for every member, so a pledge mixed up with another shows."""
    return [
        f"Thành viên {n}: đọc kỹ chuyên đề, làm theo lời Bác.",
        f"Thành viên {n}: sống giản dị, trung thực.",
        f"Thành viên {n}: lắng nghe ý kiến đồng nghiệp.",
        f"Thành viên {n}: công khai kế hoạch công tác.",
    ]


@pytest.fixture
async def world(tmp_path: Path):
    """A fresh schema, the emulator, and services for seeding and checking from outside."""
    database = Database(PG_URL)
    await database.drop_all()
    await database.create_all()
    emu = BotApiEmulator(token=TOKEN, bot_username="chuyende_test_bot")
    await emu.start()
    settings = Settings(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=emu.base_url,
        DATABASE_URL=PG_URL,
        CHUYENDE_BACKGROUND=False,
        _env_file=None,
    )
    svc = make_services(settings, db=database, now=START)
    async with database.session() as session:
        union = await factories.make_union(session, svc)
    yield svc, emu, union
    await emu.stop()
    await database.dispose()


async def members_on_the_bot(svc, emu, union, count: int, first_id: int = 7000):
    users = []
    async with svc.db.session() as session:
        for n in range(count):
            unit = union.school if n % 2 else union.factory
            member = await factories.make_member(session, svc, unit, f"Đoàn viên {n}")
            await factories.link(session, svc, member, first_id + n)
            user = emu.user(first_id + n, first_name=f"ĐV{n}", started=True)
            user.member_id = member.id
            users.append(user)
    return users


@pytest.fixture
async def fleet(world, tmp_path: Path):
    _, emu, _ = world
    fleet = BotFleet(
        emulator=emu,
        database_url=PG_URL,
        now=NOW_LOCAL,
        tmp=tmp_path,
        env_extra={"CHUYENDE_PER_BOT_RATE": str(RATE)},
    )
    try:
        await fleet.start()
        yield fleet
    finally:
        await fleet.stop()


async def pledge_sections(svc) -> dict[int, list[str]]:
    async with svc.db.reader() as session:
        pledges = {p.id: p for p in (await session.exec(select(Pledge))).all()}
        versions = (await session.exec(select(PledgeVersion))).all()
    return {
        pledges[v.pledge_id].member_id: list(v.sections.values())
        for v in versions
        if v.version == pledges[v.pledge_id].current_version
    }


async def test_a_wizard_spread_over_three_processes_ends_with_the_same_pledge(world, fleet):
    svc, emu, union = world
    [user] = await members_on_the_bot(svc, emu, union, 1)
    retries = await file_pledge(user, answers_for(0), label(svc, "submit"))

    assert retries == 0
    assert await pledge_sections(svc) == {user.member_id: answers_for(0)}
    # /pledge, four sections and the submit button: six updates, round-robin over three.
    handled = [await handled_updates(fleet, p) for p in fleet.processes]
    assert sum(handled) == 6 and all(n == 2 for n in handled), handled


async def test_killed_between_its_commit_and_its_reply_the_next_process_answers(world, fleet):
    """The process holding a member's answer has stored it and is sending the next step
    when it is killed. Telegram delivers the message to another process, which does not
    file it again (it would go in as the next section) but tells the member it was kept and
    shows the next step, so she goes on without typing anything twice."""
    svc, emu, union = world
    [user] = await members_on_the_bot(svc, emu, union, 1)
    answers = answers_for(0)
    await user.send("/pledge")
    await user.replies_until_idle(idle=1.0)
    emu.hold_sends(user.id)
    update_id = await user.send(answers[0])
    deadline = time.monotonic() + 30
    # The next step is on its way: the answer is committed.
    while not any("Phần 2/4" in str(held.get("text")) for held in emu.held_sends):
        assert time.monotonic() < deadline, fleet.logs()
        await asyncio.sleep(0.05)
    target = emu.webhook_posting(update_id)
    [victim] = [p for p in fleet.processes if target and target.startswith(p.url)]
    fleet.kill(victim)
    emu.release_sends(user.id, deliver=False)  # the victim's reply never got out
    seen = len(user.bot_messages)

    reply = await _reply_containing(user, "đã được lưu")
    assert "Phần 2/4" in reply.text and "Bạn không cần gửi lại" in reply.text
    await user.replies_until_idle(idle=1.0)
    after_kill = [m.text or "" for m in user.bot_messages[seen:]]
    assert sum("Phần 2/4" in text for text in after_kill) == 1, after_kill
    assert not any(text.startswith("✔️ Đã lưu.") for text in after_kill)  # not filed again
    assert all(a.target.startswith(victim.url) for a in emu.webhook_attempts
               if a.update_id == update_id and not a.ok)

    # She goes on from the screen she was shown: the pledge is hers, section by section.
    for n, answer in enumerate(answers[1:], start=3):
        await user.send(answer)
        screen = await _reply_containing(user, f"Phần {n}/4" if n <= 4 else REVIEW_MARK)
    await user.press(label(svc, "submit"), message=screen)
    await _reply_containing(user, SUBMITTED_MARK)
    assert await pledge_sections(svc) == {user.member_id: answers}


async def _reply_containing(user, text: str):
    """The next bot message with `text` in it (a reminder may come in between)."""
    while True:
        reply = await user.next_reply(timeout=30)
        if text in (reply.text or ""):
            return reply


async def handled_updates(fleet, process) -> int:
    metrics = await fleet.metrics(process)
    return int(
        sum(v for k, v in metrics.items() if k.startswith("chuyende_updates_total{"))
    )


async def leaders(fleet) -> list[int]:
    found = []
    for process in fleet.processes:
        if process.alive and (await fleet.metrics(process)).get("chuyende_leader") == 1:
            found.append(process.index)
    return found


async def test_periodic_jobs_run_on_one_process_and_fail_over_after_kill_9(world, fleet):
    _, emu, _ = world
    deadline = time.monotonic() + 30
    while not (current := await leaders(fleet)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert len(current) == 1, current
    assert emu.webhook is not None and emu.webhook["url"].endswith("/telegram")

    fleet.kill(fleet.processes[current[0]])
    started = time.monotonic()
    while not (after := await leaders(fleet)) and time.monotonic() - started < 60:
        await asyncio.sleep(0.5)
    assert len(after) == 1 and after != current, after
    print(f"failover after kill -9: {time.monotonic() - started:.1f} s")


def _queued(users, tag: str) -> list[outbox.Queued]:
    return [
        outbox.Queued(
            dedupe_key=f"{tag}:{u.id}", kind="broadcast", identity_id=None,
            chat_id=str(u.id), text=f"Thông báo {tag}",
        )
        for u in users
    ]  # fmt: skip


def peak_rate(timestamps: list[float], window: float = 1.0) -> int:
    """The most sends inside any `window` seconds."""
    timestamps = sorted(timestamps)
    best, start = 0, 0
    for end, at in enumerate(timestamps):
        while at - timestamps[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_outbox_rows_are_sent_once_across_processes_within_the_shared_rate(world, fleet):
    svc, emu, union = world
    users = await members_on_the_bot(svc, emu, union, 90)
    async with svc.db.session() as session:
        await outbox.enqueue(session, _queued(users, "b1"), svc.clock.now())
        await session.commit()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with svc.db.reader() as session:
            left = (await session.exec(
                select(OutboxMessage).where(OutboxMessage.status != OutboxStatus.sent)
            )).all()  # fmt: skip
        if not left:
            break
        await asyncio.sleep(0.5)
    per_chat = {u.id: notices(u, "b1") for u in users}
    assert set(per_chat.values()) == {1}, per_chat
    # The three processes share one budget: 80% of RATE for background sends, plus a burst.
    chats = set(per_chat)
    sends = [d.monotonic for d in emu.deliveries
             if d.method == "sendMessage" and d.chat_id in chats]
    assert peak_rate(sends) <= RATE * 0.8 + 2
    # ...and the work was shared: every process sent some of it.
    sent = [await background_sent(fleet, p) for p in fleet.processes]
    assert sum(sent) == len(users) and all(sent), sent


async def background_sent(fleet, process) -> int:
    metrics = await fleet.metrics(process)
    return int(metrics.get('chuyende_sends_total{lane="background",result="sent"}', 0))


def notices(user, tag: str) -> int:
    return sum(1 for m in user.bot_messages if f"Thông báo {tag}" in (m.text or ""))


async def test_kill_9_during_deadline_day_load_loses_no_pledge_and_sends_nothing_twice(
    world, fleet
):
    svc, emu, union = world
    users = await members_on_the_bot(svc, emu, union, 45)
    async with svc.db.session() as session:
        await outbox.enqueue(session, _queued(users, "load"), svc.clock.now())
        await session.commit()
    submit = label(svc, "submit")
    tasks = [
        asyncio.create_task(file_pledge(u, answers_for(n), submit))
        for n, u in enumerate(users)
    ]
    # Kill one process with a third of the members done, in the middle of the load.
    while sum(t.done() for t in tasks) < len(tasks) // 3:
        await asyncio.sleep(0.05)
    victim = fleet.processes[1]
    fleet.kill(victim)
    killed_at = datetime.now(UTC)
    retries = await asyncio.wait_for(asyncio.gather(*tasks), timeout=240)

    sections = await pledge_sections(svc)
    assert sections == {u.member_id: answers_for(n) for n, u in enumerate(users)}
    # No member got the same notice twice, whatever process the kill interrupted.
    assert max(notices(u, "load") for u in users) <= 1
    survivors = [p for p in fleet.processes if p.alive]
    assert len(survivors) == 2
    for process in survivors:
        await fleet.wait_healthy(process, timeout=10)
    print(f"killed bot 1 at {killed_at:%H:%M:%S}; members who retried: {sum(map(bool, retries))}")
