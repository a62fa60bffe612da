"""Officers' broadcasts: who gets them, photos, limits, scheduling, stopping, crashes, reports.

The union: province → district → school and factory. Dũng is an officer of the school, Hà
the district's leader. In the school Lan and Bình are on the bot, Chi is not, Gấm left the
union (deactivated, still linked), Khải blocked the bot; Mai is on the bot at the factory.
Time moves through the injected clock; the outbox and the tick are driven by hand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO

import pytest
from openpyxl import load_workbook
from sqlmodel import select

from bot.models import (
    Broadcast,
    BroadcastStatus,
    ChatIdentity,
    Member,
    OutboxMessage,
    OutboxStatus,
    Role,
)
from bot.services import outbox
from bot.services.roles import grant_role
from scheduler import broadcasts as broadcast_jobs
from scheduler.outbox_worker import OutboxWorker
from tests import factories
from tests.dialog import act, label, press, say

ANSWERS = ["Làm theo Bác.", "Sống giản dị.", "Lắng nghe.", "Công khai kế hoạch lớp."]
PEOPLE = [
    # key, full name, unit, on the bot
    ("dung", "Phạm Văn Dũng", "school", True),
    ("ha", "Võ Thị Hà", "district", True),
    ("lan", "Nguyễn Thị Lan", "school", True),
    ("binh", "Trần Văn Bình", "school", True),
    ("chi", "Lê Thị Chi", "school", False),
    ("gam", "Đỗ Thị Gấm", "school", True),
    ("khai", "Hồ Văn Khải", "school", True),
    ("mai", "Đặng Thị Mai", "factory", True),
]


@dataclass
class Town:
    svc: object
    bot: object
    emulator: object
    union: object
    people: dict[str, object] = field(default_factory=dict)  # key -> EmulatedUser
    members: dict[str, Member] = field(default_factory=dict)

    async def deliver(self, **worker_args) -> dict[str, list]:
        """Drain the outbox; what each person on the bot got (messages, not just texts)."""
        worker = OutboxWorker(self.svc, self.bot.application.bot, **worker_args)
        await worker.drain()
        return await self.received()

    async def received(self) -> dict[str, list]:
        got: dict[str, list] = {}
        for key, user in self.people.items():
            messages = await user.replies_until_idle(idle=0.05, timeout=3)
            if messages:
                got[key] = messages
        return got

    async def tick(self) -> None:
        await broadcast_jobs.tick(self.svc, self.bot.application.bot)

    async def broadcasts(self) -> list[Broadcast]:
        async with self.svc.db.reader() as session:
            return list((await session.exec(select(Broadcast).order_by(Broadcast.id))).all())

    async def rows(self) -> list[OutboxMessage]:
        async with self.svc.db.reader() as session:
            return list((await session.exec(select(OutboxMessage))).all())


@pytest.fixture
async def town(svc, bot, emulator, union) -> Town:
    town = Town(svc, bot, emulator, union)
    async with svc.db.session() as session:
        for index, (key, name, unit, on_bot) in enumerate(PEOPLE):
            member = await factories.make_member(
                session, svc, getattr(union, unit), name, f"+8491300{index:04d}"
            )
            town.members[key] = member
            if on_bot:
                await factories.link(session, svc, member, 700 + index)
        await grant_role(session, town.members["dung"], union.school, Role.officer, svc.clock.now())
        await grant_role(session, town.members["ha"], union.district, Role.leader, svc.clock.now())
        gam = town.members["gam"]
        gam.active = False
        session.add(gam)
        khai = (
            await session.exec(
                select(ChatIdentity).where(ChatIdentity.member_id == town.members["khai"].id)
            )
        ).one()
        khai.blocked_at = svc.clock.now()
        session.add(khai)
        await session.commit()
    for index, (key, _name, _unit, on_bot) in enumerate(PEOPLE):
        if on_bot and key not in ("gam", "khai"):
            user = emulator.user(700 + index, first_name=key)
            await say(svc, user, "/help")  # they opened the chat when they joined
            town.people[key] = user
    return town


def shown(said) -> list[str]:
    """The templates of what the officer was shown (the members' message is rendered too,
    for the preview, the queue and the length check)."""
    return [name for name in said.templates if name != "broadcast/message"]


async def compose(town: Town, who: str, text: str, audience: str, child: str | None = None):
    """/broadcast, the text, an audience (and a sub-unit): the preview the officer sees."""
    svc, user = town.svc, town.people[who]
    said = await say(svc, user, "/broadcast")
    assert said.templates[-1] == "broadcast/ask_content"
    said = await say(svc, user, text)
    assert said.templates[-1] == "broadcast/pick_audience"
    said = await press(svc, user, label(svc, audience))
    if child is not None:
        assert shown(said) == ["broadcast/pick_child"]
        said = await press(svc, user, getattr(town.union, child).name)
    assert said.templates[-1] == "broadcast/preview"
    return said


async def test_a_text_reaches_exactly_the_active_members_on_the_bot_in_the_subtree(town):
    text = "Họp chi bộ lúc <b>14h</b> & mang sổ tay"
    said = await compose(town, "dung", text, "bc_all")
    preview, counts = said.messages[-2], said.last
    assert preview.text == f"📢 Thông báo của {town.union.school.name}\n\n{text}"
    assert "Sẽ gửi đến: 2 người" in counts.text  # Lan and Bình
    assert "đã chặn bot: 2 người" in counts.text  # Chi (not on the bot) and Khải (blocked)
    said = await press(town.svc, town.people["dung"], label(town.svc, "bc_send_now"))
    assert shown(said) == ["broadcast/queued"]
    got = await town.deliver()
    assert sorted(got) == ["binh", "lan"]  # not Chi, Gấm, Khải, Mai, Hà, nor Dũng himself
    for key in ("lan", "binh"):
        [message] = got[key]
        assert message.text == preview.text  # escaped: members read the officer's text as is
    [broadcast] = await town.broadcasts()
    assert (broadcast.status, broadcast.recipients) == (BroadcastStatus.queued, 2)
    assert {row.dedupe_key for row in await town.rows()} == {
        f"bc:{broadcast.id}:{town.members[k].id}" for k in ("lan", "binh")
    }


@pytest.mark.parametrize(
    ("audience", "child", "expected"),
    [
        ("bc_all", None, {"dung", "lan", "binh", "mai"}),
        ("bc_sub", "factory", {"mai"}),
        ("bc_sub", "school", {"dung", "lan", "binh"}),
        ("bc_unpledged", None, {"dung", "binh", "mai"}),  # Lan filed her pledge
    ],
)
async def test_audiences_of_a_district_leader(town, audience, child, expected):
    await say(town.svc, town.people["lan"], "/pledge")
    for answer in ANSWERS:
        await say(town.svc, town.people["lan"], answer)
    await press(town.svc, town.people["lan"], label(town.svc, "submit"))
    said = await compose(town, "ha", "Nhắc việc tuần này.", audience, child)
    assert f"Sẽ gửi đến: {len(expected)} người" in said.last.text
    await press(town.svc, town.people["ha"], label(town.svc, "bc_send_now"))
    got = await town.deliver()
    assert set(got) == expected


async def test_not_joined_counts_them_sends_nothing_and_the_report_lists_them(town):
    said = await compose(town, "dung", "Mời tham gia bot.", "bc_unjoined")
    assert "📵 1 người chưa tham gia bot" in said.text  # Chi
    assert label(town.svc, "bc_schedule") not in str(said.last.buttons)
    await press(town.svc, town.people["dung"], label(town.svc, "bc_send_now"))
    assert await town.deliver() == {}
    await town.tick()
    got = await town.received()
    assert list(got) == ["dung"]
    [report] = got["dung"]
    assert report.kind == "document" and "Chưa tham gia bot: 1" in report.text
    sheet = load_workbook(BytesIO(report.document)).active
    rows = [tuple(row) for row in sheet.iter_rows(values_only=True)]
    assert rows == [
        ("Họ và tên", "Đơn vị", "Tình trạng"),
        ("Lê Thị Chi", town.union.school.name, "Chưa tham gia bot"),
    ]


async def test_a_photo_with_a_caption_arrives_as_a_photo(town):
    svc, dung = town.svc, town.people["dung"]
    await say(svc, dung, "/broadcast")
    said = await act(svc, dung, lambda: dung.send_photo(caption="Ảnh hội thao 2024"))
    assert said.templates[-1] == "broadcast/pick_audience"
    said = await press(svc, dung, label(svc, "bc_all"))
    assert said.messages[0].kind == "photo"  # the preview is the photo members will get
    await press(svc, dung, label(svc, "bc_send_now"))
    got = await town.deliver()
    [photo] = got["lan"]
    assert photo.kind == "photo"
    assert photo.text == f"📢 Thông báo của {town.union.school.name}\n\nẢnh hội thao 2024"
    [row, _] = await town.rows()
    assert row.photo and row.photo.startswith("AgAC")


async def test_too_long_text_or_caption_is_refused_and_the_wizard_still_waits(town):
    svc, dung = town.svc, town.people["dung"]
    await say(svc, dung, "/broadcast")
    said = await say(svc, dung, "a" * 4100)
    assert said.templates[-1] == "broadcast/too_long" and "4100 ký tự" in said.text
    said = await act(svc, dung, lambda: dung.send_photo(caption="b" * 1030))
    assert said.templates[-1] == "broadcast/too_long" and "Chú thích ảnh" in said.text
    said = await say(svc, dung, "Ngắn gọn thôi.")  # nothing lost: the wizard took it
    assert said.templates[-1] == "broadcast/pick_audience"
    assert await town.broadcasts() == []


async def test_scheduling_refuses_the_past_and_sends_only_when_the_clock_passes(town):
    svc, dung = town.svc, town.people["dung"]
    svc.clock.set(datetime(2024, 4, 5, 9, 0))
    await compose(town, "dung", "Sáng mai họp.", "bc_all")
    said = await press(svc, dung, label(svc, "bc_schedule"))
    assert shown(said) == ["broadcast/ask_schedule"]
    said = await say(svc, dung, "mai nhé")
    assert shown(said) == ["broadcast/schedule_invalid"]
    said = await say(svc, dung, "4/4/2024 07:30")
    assert shown(said) == ["broadcast/schedule_past"]
    said = await say(svc, dung, "5/4/2024 16:00")
    assert shown(said) == ["broadcast/scheduled"] and "16:00 5/4/2024" in said.text
    svc.clock.set(datetime(2024, 4, 5, 15, 59))
    await town.tick()
    assert await town.deliver() == {}
    said = await say(svc, dung, "/broadcast")  # it is listed, with a stop button
    assert shown(said)[0] == "broadcast/in_progress" and "16:00 5/4/2024" in said.text
    svc.clock.set(datetime(2024, 4, 5, 16, 0))
    await town.tick()
    got = await town.deliver()
    assert sorted(got) == ["binh", "lan"]
    await town.tick()  # settled: the report goes out
    got = await town.received()
    assert [m.kind for m in got["dung"]] == ["document"]


async def test_the_tomorrow_button_schedules_0730_local(town):
    svc, dung = town.svc, town.people["dung"]
    await compose(town, "dung", "Chào buổi sáng.", "bc_all")
    await press(svc, dung, label(svc, "bc_schedule"))
    said = await press(svc, dung, label(svc, "bc_tomorrow"))
    assert "07:30 6/4/2024" in said.text
    [broadcast] = await town.broadcasts()
    assert broadcast.status == BroadcastStatus.scheduled


async def _crowd(town: Town, count: int) -> list:
    """`count` more school members on the bot."""
    users = []
    async with town.svc.db.session() as session:
        for n in range(count):
            member = await factories.make_member(
                session, town.svc, town.union.school, f"Nguyễn Văn Số {n}", f"+8491400{n:04d}"
            )
            await factories.link(session, town.svc, member, 2000 + n)
            users.append(town.emulator.user(2000 + n, started=True))
    return users


def _copies(user, text: str) -> int:
    """How many times the notice ending with `text` reached this person."""
    return len([m for m in user.bot_messages if m.text.endswith(text)])


def _school(town: Town) -> list:
    return [town.people["lan"], town.people["binh"]]


async def test_stopping_a_broadcast_mid_way_sends_no_more(town):
    svc, dung = town.svc, town.people["dung"]
    crowd = await _crowd(town, 60)
    total = len(crowd) + 2  # and Lan and Bình
    await compose(town, "dung", "Tin dài hơi.", "bc_all")
    await press(svc, dung, label(svc, "bc_send_now"))
    worker = OutboxWorker(svc, town.bot.application.bot, concurrency=1)
    sending = asyncio.create_task(worker.drain())
    while sum(len(u.bot_messages) for u in crowd) < 3:
        await asyncio.sleep(0.01)
    said = await press(svc, dung, f"{label(svc, 'bc_stop')} #1")
    assert shown(said) == ["broadcast/cancelled"]
    await sending
    delivered = sum(_copies(u, "Tin dài hơi.") for u in [*crowd, *_school(town)])
    statuses = [row.status for row in await town.rows()]
    assert statuses.count(OutboxStatus.sent) == delivered < total
    assert statuses.count(OutboxStatus.cancelled) == total - delivered
    svc.clock.advance(outbox.LEASE + timedelta(seconds=1))
    assert await OutboxWorker(svc, town.bot.application.bot).drain() == 0
    [broadcast] = await town.broadcasts()
    assert broadcast.status == BroadcastStatus.cancelled
    await town.tick()
    [report] = (await town.received())["dung"]
    assert f"Đã nhận: {delivered}" in report.text
    assert f"Đã hủy: {total - delivered}" in report.text
    await dung.press_data("bc:stop:1")  # stopping twice (an old button): told so
    answer = await dung.wait_callback_answer()
    assert answer["show_alert"] and "đã gửi xong hoặc đã dừng" in answer["text"]


async def test_a_crash_mid_send_resumes_and_each_recipient_gets_one(town):
    svc = town.svc
    crowd = await _crowd(town, 30)
    await compose(town, "dung", "Không trùng lặp.", "bc_all")
    await press(svc, town.people["dung"], label(svc, "bc_send_now"))
    # A process claims ten rows and dies before sending them.
    async with svc.db.session() as session:
        assert len(await outbox.claim(session, "dead", svc.clock.now(), limit=10)) == 10
    # Another is stopped (cancelled) while sending.
    worker = OutboxWorker(svc, town.bot.application.bot, concurrency=1, flush_rows=1)
    sending = asyncio.create_task(worker.drain())
    while sum(len(u.bot_messages) for u in crowd) < 5:
        await asyncio.sleep(0.01)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    # Restart: the leases run out, a fresh worker sends what is left.
    svc.clock.advance(outbox.LEASE + timedelta(seconds=1))
    await OutboxWorker(svc, town.bot.application.bot).drain()
    recipients = [*crowd, *_school(town)]
    counts = [_copies(u, "Không trùng lặp.") for u in recipients]
    assert all(count >= 1 for count in counts)
    assert sum(counts) - len(recipients) <= 1  # at most the one that was in flight repeats
    assert {row.status for row in await town.rows()} == {OutboxStatus.sent}


async def test_the_delivery_report_counts_and_lists_everyone_once(town):
    svc, dung = town.svc, town.people["dung"]
    town.emulator.fail_chat(town.people["binh"].id, status=403, times=None)
    await compose(town, "dung", "Báo cáo thử.", "bc_all")
    await press(svc, dung, label(svc, "bc_send_now"))
    await town.deliver()
    await town.tick()
    await town.tick()  # once: a second tick sends nothing more
    [report] = (await town.received())["dung"]
    assert report.kind == "document"
    for line in ("Đã nhận: 1", "Lỗi: 0", "Đã chặn bot: 2", "Chưa tham gia bot: 1"):
        assert line in report.text
    sheet = load_workbook(BytesIO(report.document)).active
    rows = sorted(tuple(row) for row in sheet.iter_rows(min_row=2, values_only=True))
    school = town.union.school.name
    assert rows == [
        ("Hồ Văn Khải", school, "Đã chặn bot"),
        ("Lê Thị Chi", school, "Chưa tham gia bot"),
        ("Nguyễn Thị Lan", school, "Đã nhận"),
        ("Trần Văn Bình", school, "Đã chặn bot"),  # answered 403 while sending
    ]
    [broadcast] = await town.broadcasts()
    assert broadcast.status == BroadcastStatus.done and broadcast.reported_at is not None


async def test_a_member_cannot_broadcast(town):
    said = await say(town.svc, town.people["lan"], "/broadcast")
    assert shown(said) == ["broadcast/not_allowed"]


async def test_a_forged_button_for_another_senders_broadcast_is_refused(town):
    await compose(town, "ha", "Của Hà.", "bc_all")
    await press(town.svc, town.people["ha"], label(town.svc, "bc_send_now"))
    [broadcast] = await town.broadcasts()
    dung = town.people["dung"]
    await dung.press_data(f"bc:stop:{broadcast.id}")
    answer = await dung.wait_callback_answer()
    assert answer["show_alert"] and "không phải của bạn" in answer["text"]
    [broadcast] = await town.broadcasts()
    assert broadcast.status == BroadcastStatus.queued
    await dung.press_data("bc:u:1:999")  # a unit from no wizard of his
    answer = await dung.wait_callback_answer()
    assert "cũ" in answer["text"]


async def test_an_officer_of_two_units_picks_one_and_cannot_forge_another(town):
    svc, dung = town.svc, town.people["dung"]
    async with svc.db.session() as session:
        await grant_role(session, town.members["dung"], town.union.factory, Role.officer,
                         svc.clock.now())  # fmt: skip
        await session.commit()
    said = await say(svc, dung, "/broadcast")
    assert shown(said) == ["broadcast/pick_unit"]
    assert [row[0] for row in said.last.buttons[:2]] == [
        town.union.school.name,
        town.union.factory.name,
    ]
    version = said.last.callback_data(town.union.school.name).split(":")[2]
    forged = f"bc:u:{version}:{town.union.district.id}"  # a unit above his roles
    said = await act(svc, dung, lambda: dung.press_data(forged))
    assert shown(said) == ["broadcast/unit_not_allowed"]
    said = await press(svc, dung, town.union.factory.name)
    assert shown(said) == ["broadcast/ask_content"] and town.union.factory.name in said.text
    await say(svc, dung, "Nhà máy nghỉ chiều thứ Sáu.")
    await press(svc, dung, label(svc, "bc_all"))
    await press(svc, dung, label(svc, "bc_send_now"))
    got = await town.deliver()
    assert list(got) == ["mai"]
    assert got["mai"][0].text.startswith(f"📢 Thông báo của {town.union.factory.name}")


async def test_a_failed_report_is_sent_on_the_next_tick_and_only_once(town):
    svc, dung = town.svc, town.people["dung"]
    await compose(town, "dung", "Thử báo cáo.", "bc_all")
    await press(svc, dung, label(svc, "bc_send_now"))
    await town.deliver()
    town.emulator.fail_chat(dung.id, status=502, times=1, methods=["sendDocument"])
    await town.tick()
    assert "dung" not in await town.received()
    [broadcast] = await town.broadcasts()
    assert broadcast.reported_at is None  # not lost: the next tick tries again
    await town.tick()
    await town.tick()
    assert [m.kind for m in (await town.received())["dung"]] == ["document"]


async def test_stopping_a_scheduled_broadcast_sends_nothing_ever(town):
    svc, dung = town.svc, town.people["dung"]
    await compose(town, "dung", "Hẹn mà thôi.", "bc_all")
    await press(svc, dung, label(svc, "bc_schedule"))
    said = await press(svc, dung, label(svc, "bc_tomorrow"))
    said = await press(svc, dung, f"{label(svc, 'bc_stop')} #1")
    assert "Đã gửi được 0 người" in said.text
    svc.clock.advance(timedelta(days=2))
    await town.tick()
    assert await town.deliver() == {}
    assert "dung" not in await town.received()  # no report for what never went out


async def test_cancel_leaves_the_wizard_and_sends_nothing(town):
    svc, dung = town.svc, town.people["dung"]
    await compose(town, "dung", "Bỏ đi.", "bc_all")
    said = await say(svc, dung, "/cancel")
    assert shown(said) == ["common/cancelled"]
    said = await say(svc, dung, "Chữ gõ sau khi hủy.")
    assert shown(said) == ["common/hint"]
    assert await town.broadcasts() == [] and await town.deliver() == {}


async def test_each_member_reads_the_notice_in_their_own_language(town):
    svc = town.svc
    await say(svc, town.people["lan"], "/language")
    await press(svc, town.people["lan"], label(svc, "lang_en"))
    await compose(town, "dung", "Họp lúc 14h.", "bc_all")
    await press(svc, town.people["dung"], label(svc, "bc_send_now"))
    got = await town.deliver()
    school = town.union.school.name
    assert got["lan"][0].text == f"📢 Notice from {school}\n\nHọp lúc 14h."
    assert got["binh"][0].text == f"📢 Thông báo của {school}\n\nHọp lúc 14h."
