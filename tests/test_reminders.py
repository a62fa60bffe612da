"""Reminders, late notices, officers' lists and digests around the 2024 pledge deadline.

"trước ngày 10/4/2024" makes 9/4 the last day; the default offsets (7, 3, 1, 0 days before
it) fall on 2/4, 6/4, 8/4 and 9/4, each at 07:30 when the sending window opens. Time moves
through the injected clock; each step runs one planning tick and drains the outbox.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime

import pytest
from sqlmodel import select

from bot.models import ChatIdentity, NoticeKind, OutboxMessage, ReminderLog, ReminderStatus, Role
from bot.services.campaigns import apply_campaign
from bot.services.roles import grant_role
from scheduler.notices import plan_tick
from scheduler.outbox_worker import OutboxWorker
from tests import factories
from tests.dialog import label, press, say

ANSWERS = ["Làm theo Bác.", "Sống giản dị.", "Lắng nghe.", "Công khai kế hoạch lớp."]


@dataclass
class Town:
    svc: object
    bot: object
    emulator: object
    union: object
    people: dict[str, object] = field(default_factory=dict)  # name -> EmulatedUser
    members: dict[str, object] = field(default_factory=dict)  # name -> Member

    async def at(self, day: str, hhmm: str = "07:30") -> dict[str, list[str]]:
        """Set the clock to a local moment, run one tick, deliver; what each person got."""
        moment = datetime.strptime(f"{day}/2024 {hhmm}", "%d/%m/%Y %H:%M")
        self.svc.clock.set(moment)
        return await self.tick()

    async def tick(self) -> dict[str, list[str]]:
        await plan_tick(self.svc)
        worker = OutboxWorker(self.svc, self.bot.application.bot)
        await worker.drain()
        got: dict[str, list[str]] = {}
        for name, user in self.people.items():
            messages = await user.replies_until_idle(idle=0.05, timeout=3)
            if messages:
                got[name] = [m.text for m in messages]
        return got

    async def logs(self, name: str, kind: NoticeKind = NoticeKind.reminder):
        async with self.svc.db.reader() as session:
            rows = await session.exec(
                select(ReminderLog).where(
                    ReminderLog.member_id == self.members[name].id, ReminderLog.kind == kind
                )
            )
            return sorted((r.offset_days, r.status) for r in rows.all())


@pytest.fixture
async def town(svc, bot, emulator, union) -> Town:
    """Lan and Bình (school members on the bot), Chi (school, not on the bot), Dũng (school
    officer), Hà (district leader). The clock starts on 1/4/2024 06:00."""
    svc.clock.set(datetime(2024, 4, 1, 6, 0))
    town = Town(svc, bot, emulator, union)
    async with svc.db.session() as session:
        for index, (name, full) in enumerate(
            [
                ("lan", "Nguyễn Thị Lan"),
                ("binh", "Trần Văn Bình"),
                ("chi", "Lê Thị Chi"),
                ("dung", "Phạm Văn Dũng"),
                ("ha", "Võ Thị Hà"),
            ]
        ):
            unit = union.district if name == "ha" else union.school
            member = await factories.make_member(session, svc, unit, full, f"+8491200{index:04d}")
            town.members[name] = member
            if name != "chi":
                await factories.link(session, svc, member, 800 + index)
        await grant_role(session, town.members["dung"], union.school, Role.officer, svc.clock.now())
        await grant_role(session, town.members["ha"], union.district, Role.leader, svc.clock.now())
        await session.commit()
    for index, name in enumerate(["lan", "binh", "chi", "dung", "ha"]):
        if name != "chi":
            user = emulator.user(800 + index, first_name=name)
            await say(svc, user, "/help")  # they opened the chat when they joined
            town.people[name] = user
    return town


async def _file_pledge(svc, user) -> None:
    await say(svc, user, "/pledge")
    for answer in ANSWERS:
        await say(svc, user, answer)
    await press(svc, user, label(svc, "submit"))


def _pledge_reminders(got: dict[str, list[str]], name: str) -> list[str]:
    return [t for t in got.get(name, []) if "Nhắc hạn: Nộp bản đăng ký" in t]


async def test_offsets_fire_at_the_right_local_times(town):
    assert _pledge_reminders(await town.at("2/4", "07:29"), "lan") == []
    [seven] = _pledge_reminders(await town.at("2/4", "07:30"), "lan")
    assert "còn 7 ngày" in seven and "trước ngày 10/4/2024" in seven and "9/4/2024" in seven
    assert _pledge_reminders(await town.at("2/4", "12:00"), "lan") == []  # once, not per tick
    assert _pledge_reminders(await town.at("5/4", "07:30"), "lan") == []
    [three] = _pledge_reminders(await town.at("6/4", "07:30"), "lan")
    assert "còn 3 ngày" in three
    [one] = _pledge_reminders(await town.at("8/4", "09:15"), "lan")
    assert "còn 1 ngày" in one
    [last] = _pledge_reminders(await town.at("9/4", "07:30"), "lan")
    assert "hôm nay là ngày cuối cùng" in last
    assert await town.logs("lan") == [(o, ReminderStatus.queued) for o in (0, 1, 3, 7)]
    assert "chi" not in town.people  # Chi is not on the bot: nothing to deliver to her


async def test_the_reminder_button_opens_the_pledge_at_the_saved_step(town):
    await say(town.svc, town.people["lan"], "/pledge")
    await say(town.svc, town.people["lan"], ANSWERS[0])
    await town.at("2/4")
    said = await press(town.svc, town.people["lan"], label(town.svc, "open_pledge"))
    assert said.templates == ["pledge/intro", "pledge/step"]
    assert "Phần 2/4" in said.last.text


async def test_a_member_who_pledges_between_offsets_hears_no_more(town):
    assert _pledge_reminders(await town.at("2/4"), "binh")
    town.svc.clock.set(datetime(2024, 4, 3, 9, 0))
    await _file_pledge(town.svc, town.people["binh"])
    for day in ("6/4", "8/4", "9/4"):
        got = await town.at(day)
        assert _pledge_reminders(got, "binh") == [] and _pledge_reminders(got, "lan")
    got = await town.at("10/4", "08:00")
    assert "binh" not in got or not any("Đã qua hạn" in t for t in got["binh"])
    assert await town.logs("binh") == [(7, ReminderStatus.queued)]


@pytest.mark.parametrize(
    ("hhmm", "sent"),
    [("07:29", False), ("07:30", True), ("20:29", True), ("20:30", False), ("23:00", False)],
)
async def test_nothing_is_sent_outside_the_window(town, hhmm, sent):
    got = await town.at("2/4", hhmm)
    assert bool(_pledge_reminders(got, "lan")) is sent


async def test_holidays_are_skipped_and_the_next_day_sends_one_message(town):
    # The school sets its own last day, 19/4; 18/4/2024 is Giỗ Tổ Hùng Vương, a holiday.
    async with town.svc.db.session() as session:
        await factories.override_pledge_deadline(
            session, town.svc, town.union.school, date(2024, 4, 19)
        )
    assert _pledge_reminders(await town.at("18/4", "08:00"), "lan") == []
    [last] = _pledge_reminders(await town.at("19/4", "07:30"), "lan")
    assert "hôm nay là ngày cuối cùng" in last
    logs = dict(await town.logs("lan"))
    assert logs[0] == ReminderStatus.queued and logs[1] == ReminderStatus.superseded


async def test_a_muted_member_is_skipped_until_the_day_after(town):
    said = await say(town.svc, town.people["lan"], "/reminders 7/4/2024")
    assert said.templates == ["reminders/menu"] and "7/4/2024" in said.text
    assert _pledge_reminders(await town.at("2/4"), "lan") == []
    assert _pledge_reminders(await town.at("6/4"), "lan") == []
    assert _pledge_reminders(await town.at("8/4"), "lan")


async def test_bot_down_across_a_reminder_catches_up_once(town):
    await town.at("2/4", "06:00")  # the last tick before the bot went down
    [caught_up] = _pledge_reminders(await town.at("2/4", "11:40"), "lan")
    assert "còn 7 ngày" in caught_up
    assert _pledge_reminders(await town.at("2/4", "11:41"), "lan") == []


async def test_bot_back_at_night_waits_for_the_morning(town):
    assert _pledge_reminders(await town.at("2/4", "22:00"), "lan") == []
    [morning] = _pledge_reminders(await town.at("3/4", "07:30"), "lan")
    assert "còn 6 ngày" in morning  # the 7-day reminder, sent late, says what is true now


async def test_several_offsets_due_at_once_send_one_message(town):
    [one] = _pledge_reminders(await town.at("6/4", "10:00"), "lan")  # down since 1/4
    assert "còn 3 ngày" in one
    assert await town.logs("lan") == [(3, ReminderStatus.queued), (7, ReminderStatus.superseded)]


async def test_down_until_after_the_deadline_records_skipped_and_sends_late(town):
    await town.at("2/4")
    got = await town.at("10/4", "08:00")
    assert _pledge_reminders(got, "lan") == []
    assert any("Đã qua hạn" in t for t in got["lan"])
    logs = dict(await town.logs("lan"))
    assert logs == {
        7: ReminderStatus.queued,
        3: ReminderStatus.skipped,
        1: ReminderStatus.skipped,
        0: ReminderStatus.skipped,
    }


async def test_late_notice_once_and_the_officer_gets_the_list(town):
    town.svc.clock.set(datetime(2024, 4, 5, 9, 0))
    await _file_pledge(town.svc, town.people["binh"])
    got = await town.at("10/4", "08:00")
    assert [t for t in got["lan"] if "Đã qua hạn" in t]
    assert not [t for t in got.get("binh", []) if "Đã qua hạn" in t]
    [late_list] = [t for t in got["dung"] if "danh sách chưa nộp sau hạn" in t]
    # Given names sort the Vietnamese way: Chi, Dũng, Lan (Chi is listed though not on the bot).
    assert (
        late_list.index("Lê Thị Chi")
        < late_list.index("Phạm Văn Dũng")
        < late_list.index("Nguyễn Thị Lan")
    )
    assert "Trần Văn Bình" not in late_list
    again = await town.at("11/4", "08:00")
    assert not any("Đã qua hạn" in t or "danh sách" in t for ts in again.values() for t in ts)
    said = await say(town.svc, town.people["dung"], "/pending")
    assert said.templates == ["pending/list"]
    assert "Lê Thị Chi 📵" in said.text and "Nguyễn Thị Lan" in said.text
    assert "đã qua hạn" in said.text and "Trần Văn Bình" not in said.text


async def test_pending_is_refused_to_a_plain_member(town):
    said = await say(town.svc, town.people["lan"], "/pending")
    assert said.templates == ["pending/not_allowed"]
    assert "Lê Thị Chi" not in said.text


async def test_leader_digest_three_days_before_and_the_day_after(town):
    town.svc.clock.set(datetime(2024, 4, 3, 9, 0))
    await _file_pledge(town.svc, town.people["binh"])
    got = await town.at("6/4", "07:30")
    [before] = [t for t in got["ha"] if "Nộp bản đăng ký" in t and "📊" in t]
    assert "còn 3 ngày đến hạn" in before
    assert "Đã nộp đúng hạn: 1" in before and "Chưa nộp: 4" in before
    assert "CĐCS Công ty May Phan Thiết: 0/0" in before or "CĐCS Trường THPT" in before
    got = await town.at("10/4", "07:45")
    [after] = [t for t in got["ha"] if "📊" in t and "Nộp bản đăng ký" in t]
    assert "kết quả sau hạn" in after


async def test_unit_deadlines_remind_the_leaders_of_units_below(town):
    got = await town.at("29/4", "07:30")  # 7 days before 6/5 (six-month report)
    [report] = [t for t in got["ha"] if "Nhắc hạn của đơn vị" in t and "6 tháng" in t]
    assert "LĐLĐ thành phố Phan Thiết" in report and "chậm nhất ngày 6/5/2024" in report
    assert not any("Nhắc hạn của đơn vị" in t for t in got.get("lan", []))


async def test_429s_end_with_one_delivery_and_403_blocks(town, emulator):
    emulator.fail_chat(town.people["lan"].id, status=429, retry_after=1, times=2)
    emulator.fail_chat(town.people["binh"].id, status=403, times=None)
    got = await town.at("2/4")
    assert len(_pledge_reminders(got, "lan")) == 1
    assert _pledge_reminders(got, "binh") == []
    async with town.svc.db.reader() as session:
        identity = (
            await session.exec(
                select(ChatIdentity).where(ChatIdentity.member_id == town.members["binh"].id)
            )
        ).one()
        statuses = {
            m.dedupe_key.split(":m")[-1]: m.status
            for m in (await session.exec(select(OutboxMessage))).all()
        }
    assert identity.blocked_at is not None
    assert statuses[str(town.members["binh"].id)] == "blocked"
    emulator.clear_faults()
    got = await town.at("6/4")
    assert _pledge_reminders(got, "binh") == []  # skipped while blocked


async def test_blocking_and_unblocking_the_bot_is_noticed(town):
    binh = town.people["binh"]
    await binh.block_bot()
    await binh.replies_until_idle(idle=0.2)
    assert _pledge_reminders(await town.at("2/4"), "binh") == []
    await binh.unblock_bot()
    await binh.replies_until_idle(idle=0.2)
    assert _pledge_reminders(await town.at("6/4"), "binh")


async def test_reminders_menu_mutes_and_unmutes(town):
    lan = town.people["lan"]
    said = await say(town.svc, lan, "/reminders")
    assert said.templates == ["reminders/menu"] and "trước ngày 10/4/2024" in said.text
    said = await press(town.svc, lan, label(town.svc, "mute_7"))
    assert "Đã tạm dừng nhắc đến hết ngày 7/4/2024" in said.last.text
    said = await press(town.svc, lan, label(town.svc, "unmute"))
    assert "Đã bật lại nhắc hạn" in said.last.text
    for bad, template in (
        ("/reminders 31/2/2024", "reminders/bad_date"),
        ("/reminders hôm qua", "reminders/bad_date"),
        ("/reminders 1/1/2024", "reminders/mute_past"),
        ("/reminders 1/1/2030", "reminders/mute_too_far"),
    ):
        said = await say(town.svc, lan, bad)
        assert said.templates == [template], bad
    async with town.svc.db.reader() as session:
        member = await session.get(type(town.members["lan"]), town.members["lan"].id)
    assert member.reminders_muted_until is None
    await lan.press_data("rm:mute:9999")
    assert (await lan.wait_callback_answer()).get("show_alert") is True


async def test_two_schedulers_on_one_database_send_each_reminder_once(town, database_url):
    """A second process: its own engine and services, the same database."""
    from bot.db import Database
    from bot.runtime import make_services

    other_db = Database(database_url)
    other = make_services(town.svc.settings, clock=town.svc.clock, db=other_db)
    town.svc.clock.set(datetime(2024, 4, 2, 7, 30))
    await asyncio.gather(plan_tick(town.svc), plan_tick(other), plan_tick(town.svc))
    bot = town.bot.application.bot
    await asyncio.gather(
        OutboxWorker(town.svc, bot, batch=1).drain(), OutboxWorker(other, bot, batch=1).drain()
    )
    await other_db.dispose()
    lan_chat = town.people["lan"].id
    sends = [
        d for d in town.emulator.deliveries if d.chat_id == lan_chat and d.method == "sendMessage"
    ]
    reminders = [m for m in town.people["lan"].bot_messages if "Nhắc hạn" in m.text]
    assert len(reminders) == 1, [m.text[:40] for m in reminders]
    assert len(sends) == len(town.people["lan"].bot_messages)


async def test_a_lower_units_own_policy_replaces_the_shipped_one(town):
    async with town.svc.db.session() as session:
        await apply_campaign(
            session,
            town.svc.catalog,
            "binh-thuan-2024",
            town.union.school,
            town.svc.clock.now(),
            None,
            {"offsets_days": [5, 0], "window": {"start": "09:00", "end": "17:00"}},
        )
    assert _pledge_reminders(await town.at("2/4", "10:00"), "lan") == []  # no 7-day one here
    assert _pledge_reminders(await town.at("4/4", "08:59"), "lan") == []  # window opens at 9
    [five] = _pledge_reminders(await town.at("4/4", "09:00"), "lan")
    assert "còn 5 ngày" in five
