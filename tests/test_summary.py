"""/summary for leaders and officers: figures, drill-down, chart, Excel, report drafts, reports.

The town (5/4/2024, four days before the pledge's last day 9/4):

    LĐLĐ tỉnh Bình Thuận
      LĐLĐ thành phố Phan Thiết — Hà (leader, on the bot, no pledge)
        CĐCS Trường THPT — Lan (pledged on time), Bình (on the bot), Chi (not on the bot),
                            Sơn (leader, on the bot)                       1 of 4 = 25%
        CĐCS Công ty May — Đào (leader, pledged on time, approved), Em (pledged late)  2 of 2

District total: 7 members, 6 on the bot, 3 pledged (2 on time, 1 late), 4 missing, 1 approved.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from openpyxl import load_workbook
from sqlmodel import select

from bot.documents.report_docx import text_of
from bot.models import Pledge, ReviewDecision, Role, UnitReport
from bot.services import campaigns, pledges, tallies
from bot.services.people import load_person
from bot.services.roles import grant_role
from scheduler.notices import plan_tick
from scheduler.outbox_worker import OutboxWorker
from tests import factories
from tests.dialog import act, label, press, say

PEOPLE = [
    # key, full name, unit, on the bot, pledge ("on_time" | "late" | None)
    ("ha", "Võ Thị Hà", "district", True, None),
    ("lan", "Nguyễn Thị Lan", "school", True, "on_time"),
    ("binh", "Trần Văn Bình", "school", True, None),
    ("chi", "Lê Thị Chi", "school", False, None),
    ("son", "Đỗ Văn Sơn", "school", True, None),
    ("dao", "Phạm Thị Đào", "factory", True, "on_time"),
    ("em", "Hồ Văn Em", "factory", True, "late"),
]
START_LOCAL = datetime(2024, 4, 5, 8, 0)


@dataclass
class Town:
    svc: object
    bot: object
    union: object
    users: dict[str, object] = field(default_factory=dict)
    members: dict[str, object] = field(default_factory=dict)

    async def tick(self, day_month: str, hhmm: str = "07:30") -> dict[str, list[str]]:
        self.svc.clock.set(datetime.strptime(f"{day_month}/2024 {hhmm}", "%d/%m/%Y %H:%M"))
        await plan_tick(self.svc)
        await OutboxWorker(self.svc, self.bot.application.bot).drain()
        got = {}
        for name, user in self.users.items():
            messages = await user.replies_until_idle(idle=0.05, timeout=3)
            if messages:
                got[name] = [m.text for m in messages]
        return got


async def _file(svc, user_id: int, at_local: datetime) -> None:
    """A pledge filed through the pledge service, as the wizard would at that moment."""
    svc.clock.set(at_local)
    at, tz = svc.clock.now(), svc.clock.tz
    async with svc.db.session() as session:
        person = await load_person(session, "telegram", str(user_id), str(user_id), at)
        in_force = await campaigns.in_force_for_unit(session, person.unit, svc.clock.today())
        view = await pledges.open_wizard(session, person, in_force, at, tz)
        while view.step < view.total:
            view = await pledges.answer(session, person, in_force, "Làm theo Bác.", at)
        await pledges.submit(session, person, in_force, view.version, at, tz)


@pytest.fixture
async def town(svc, bot, emulator, union) -> Town:
    town = Town(svc, bot, union)
    units = {"district": union.district, "school": union.school, "factory": union.factory}
    async with svc.db.session() as session:
        for index, (key, name, unit, on_bot, _) in enumerate(PEOPLE):
            member = await factories.make_member(
                session, svc, units[unit], name, f"+8491300{index:04d}"
            )
            town.members[key] = member
            if on_bot:
                await factories.link(session, svc, member, 700 + index)
        now = svc.clock.now()
        await grant_role(session, town.members["ha"], union.district, Role.leader, now)
        await grant_role(session, town.members["son"], union.school, Role.leader, now)
        await grant_role(session, town.members["dao"], union.factory, Role.leader, now)
        await session.commit()
    for index, (_, _, _, _, pledge) in enumerate(PEOPLE):
        if pledge == "on_time":
            await _file(svc, 700 + index, datetime(2024, 4, 3, 9, 0))
        elif pledge == "late":
            await _file(svc, 700 + index, datetime(2024, 4, 12, 9, 0))
    async with svc.db.session() as session:  # an officer approved Đào's pledge
        async with tallies.tracking(session, town.members["dao"].id):
            pledge = (
                await session.exec(select(Pledge).where(Pledge.member_id == town.members["dao"].id))
            ).one()
            pledge.review = ReviewDecision.approved
            session.add(pledge)
        await session.commit()
    svc.clock.set(START_LOCAL)
    for index, (key, _, _, on_bot, _) in enumerate(PEOPLE):
        if on_bot:
            town.users[key] = emulator.user(700 + index, first_name=key)
    return town


def _drill(svc, unit) -> str:
    return f"{label(svc, 'sm_drill')} {unit.name}"


async def test_leader_sees_the_figures_of_their_subtree(town):
    said = await say(town.svc, town.users["ha"], "/summary")
    assert said.templates == ["summary/view"]
    text = said.text
    assert "LĐLĐ thành phố Phan Thiết" in text and "5/4/2024" in text
    assert "Đoàn viên: 7" in text
    assert "Đang dùng bot: 6" in text
    assert "Đã nộp bản đăng ký: 3 (42%)" in text
    assert "đúng hạn: 2" in text and "trễ hạn: 1" in text
    assert "Chưa nộp: 4" in text and "Đã duyệt: 1" in text
    assert "Nộp bản đăng ký" in text and "9/4/2024" in text and "còn 4 ngày" in text
    school = text.index("CĐCS Trường THPT Phan Thiết: 1/4 (25%), chưa nộp 3")
    factory = text.index("CĐCS Công ty May Phan Thiết: 2/2 (100%), chưa nộp 0")
    assert school < factory  # furthest behind first
    # Ha's own unit is the top of her scope: no way further up.
    assert label(town.svc, "sm_up") not in [b for row in said.last.buttons for b in row]


async def test_drill_down_and_back_up(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    said = await press(svc, ha, _drill(svc, town.union.school))
    assert "📊 CĐCS Trường THPT Phan Thiết" in said.text
    assert "Đoàn viên: 4" in said.text and "Chưa nộp: 3" in said.text
    assert "Đơn vị trực thuộc" not in said.text
    said = await press(svc, ha, label(svc, "sm_up"))
    assert "📊 LĐLĐ thành phố Phan Thiết" in said.text and "Đoàn viên: 7" in said.text


async def test_forged_drill_outside_the_scope_is_refused(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    for data in (f"sm:u:{town.union.province.id}", f"sm:c:{town.union.province.id}", "sm:u:99999"):
        said = await act(svc, ha, lambda data=data: ha.press_data(data))
        assert said.templates == ["summary/not_yours"]
        assert "không có quyền" in said.text and "Bình Thuận" not in said.text
    await ha.press_data("sm:zz:1")  # garbage: answered as a stale button, nothing shown
    for _ in range(50):
        if len(ha.callback_answers) == 4:
            break
        await asyncio.sleep(0.1)
    answer = ha.callback_answers[-1]
    assert "Nút này đã cũ" in answer["text"] and answer["show_alert"]


async def test_sibling_leader_sees_only_their_own_unit(town):
    svc, dao = town.svc, town.users["dao"]
    said = await say(svc, dao, "/summary")
    assert "📊 CĐCS Công ty May Phan Thiết" in said.text and "Đoàn viên: 2" in said.text
    assert "Trường THPT" not in said.text
    said = await act(svc, dao, lambda: dao.press_data(f"sm:u:{town.union.school.id}"))
    assert said.templates == ["summary/not_yours"]
    said = await act(svc, dao, lambda: dao.press_data(f"sm:x:{town.union.district.id}"))
    assert said.templates == ["summary/not_yours"]
    assert all(m.kind == "text" for m in said.messages)  # no file leaked


async def test_a_member_is_told_summary_is_for_officers(town):
    said = await say(town.svc, town.users["lan"], "/summary")
    assert said.templates == ["summary/not_allowed"]
    assert "cán bộ và lãnh đạo" in said.text


async def test_chart_arrives_as_a_png(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    said = await press(svc, ha, label(svc, "sm_chart"))
    photo = said.last
    assert photo.kind == "photo" and photo.photo.startswith(b"\x89PNG\r\n\x1a\n")
    assert 5_000 < len(photo.photo) < 500_000
    width, height = int.from_bytes(photo.photo[16:20]), int.from_bytes(photo.photo[20:24])
    assert width == 800 and 200 < height < 1000
    assert "Phan Thiết" in photo.text and "5/4/2024" in photo.text


async def test_excel_list_of_every_member_in_scope(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    said = await press(svc, ha, label(svc, "sm_export"))
    document = said.last
    assert document.kind == "document" and document.document_name.endswith(".xlsx")
    sheet = load_workbook(io.BytesIO(document.document)).active
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    header = rows[0]
    assert {"Đơn vị / Unit", "Họ và tên / Full name", "Dùng bot / On the bot"} <= set(header)
    name, on_bot = header.index("Họ và tên / Full name"), header.index("Dùng bot / On the bot")
    pledge = next(i for i, title in enumerate(header) if title.startswith("Bản đăng ký"))
    by_name = {row[name]: row for row in rows[1:]}
    assert len(by_name) == 7
    assert (by_name["Lê Thị Chi"][on_bot], by_name["Lê Thị Chi"][pledge]) == ("Chưa", "Chưa nộp")
    assert by_name["Hồ Văn Em"][pledge] == "Trễ hạn"
    assert by_name["Phạm Thị Đào"][pledge] == "Đã duyệt"
    assert by_name["Nguyễn Thị Lan"][pledge] == "Đúng hạn"


async def test_report_draft_follows_the_decree_layout(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    said = await press(svc, ha, label(svc, "sm_report_s"))
    assert said.templates == ["summary/reports"]
    said = await press(svc, ha, label(svc, "sm_draft"))
    document = said.last
    assert document.kind == "document" and document.document_name.endswith(".docx")
    text = text_of(document.document)
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text
    assert "Độc lập - Tự do - Hạnh phúc" in text
    assert "LĐLĐ TỈNH BÌNH THUẬN" in text and "LĐLĐ THÀNH PHỐ PHAN THIẾT" in text
    assert "Số: …/BC-LĐLĐ" in text
    assert "Bình Thuận, ngày 5 tháng 4 năm 2024" in text
    assert "BÁO CÁO" in text and "Sơ kết 6 tháng đầu năm 2024" in text
    assert "tính đến ngày 05/04/2024" in text
    assert "Tổng số đoàn viên: 7" in text and "Chưa nộp bản đăng ký: 4" in text
    assert "CĐCS Trường THPT Phan Thiết | 4 | 3 | 1 | 0 | 3 | 25%" in text
    assert "GƯƠNG ĐIỂN HÌNH" in text and "không có thông tin về gương điển hình" in text
    assert "CĐCS Trường THPT Phan Thiết (đạt 25%, còn 3 người chưa nộp)" in text
    assert "Nơi nhận:" in text and "TM. BAN THƯỜNG VỤ" in text and "CHỦ TỊCH" in text


async def test_reports_sent_up_and_opened_by_the_leader_above(town):
    svc, ha, son, dao = town.svc, town.users["ha"], town.users["son"], town.users["dao"]
    # The school's leader sends the bot's draft as it is.
    await say(svc, son, "/summary")
    await press(svc, son, label(svc, "sm_report_s"))
    said = await press(svc, son, label(svc, "sm_send_draft"))
    assert said.templates[-1] == "summary/report_sent" and "6 tháng" in said.text
    # The factory's leader uploads a signed scan; a wrong kind of file is refused first.
    await say(svc, dao, "/summary")
    await press(svc, dao, label(svc, "sm_report_s"))
    said = await press(svc, dao, label(svc, "sm_upload"))
    assert said.templates == ["summary/upload_ask"]
    said = await act(svc, dao, lambda: dao.send_document(b"MZ...", "virus.exe"))
    assert said.templates == ["summary/upload_bad_type"] and "virus.exe" in said.text
    said = await say(svc, dao, "đây ạ")
    assert said.templates == ["summary/upload_expected"]
    signed = b"%PDF-1.4 signed report of the factory"
    said = await act(svc, dao, lambda: dao.send_document(signed, "bao-cao-6-thang.pdf"))
    assert said.templates == ["summary/report_sent"]
    async with svc.db.reader() as session:
        sent = (await session.exec(select(UnitReport))).all()
    assert {(r.unit_id, r.generated) for r in sent} == {
        (town.union.school.id, True),
        (town.union.factory.id, False),
    }
    # The district leader sees who sent and opens both.
    await say(svc, ha, "/summary")
    said = await press(svc, ha, label(svc, "sm_report_s"))
    assert "đã gửi 2/2" in said.text
    assert "✅ CĐCS Trường THPT Phan Thiết" in said.text
    said = await press(svc, ha, f"{label(svc, 'sm_open')} CĐCS Trường THPT Phan Thiết")
    assert said.last.kind == "document" and said.last.document_name.endswith(".docx")
    assert "Tổng số đoàn viên: 4" in text_of(said.last.document)
    said = await press(svc, ha, f"{label(svc, 'sm_open')} CĐCS Công ty May Phan Thiết")
    assert said.last.document == signed and said.last.document_name == "bao-cao-6-thang.pdf"
    # A sibling cannot open the school's report with a forged button.
    school_report = next(r for r in sent if r.unit_id == town.union.school.id)
    said = await act(svc, dao, lambda: dao.press_data(f"sm:o:{school_report.id}"))
    assert said.templates == ["summary/not_yours"]


async def test_district_sees_which_units_still_owe_the_report(town):
    svc, ha = town.svc, town.users["ha"]
    await say(svc, ha, "/summary")
    said = await press(svc, ha, label(svc, "sm_report_a"))
    assert "đã gửi 0/2" in said.text and "⏳ CĐCS Công ty May Phan Thiết — chưa gửi" in said.text
    assert "Báo cáo của đơn vị: ⏳ chưa gửi" in said.text


async def test_reminders_stop_for_a_unit_that_sent_its_report(town):
    svc, son = town.svc, town.users["son"]
    for name in ("ha", "dao"):
        await say(svc, town.users[name], "/help")  # they opened the chat when they joined
    await say(svc, son, "/summary")
    await press(svc, son, label(svc, "sm_report_s"))
    await press(svc, son, label(svc, "sm_send_draft"))
    got = await town.tick("29/4")  # seven days before the six-month report's 6/5

    def six_month(name: str) -> list[str]:
        return [t for t in got.get(name, []) if "Nhắc hạn của đơn vị" in t and "6 tháng" in t]

    assert six_month("son") == []
    assert six_month("dao") and "CĐCS Công ty May Phan Thiết" in six_month("dao")[0]
    assert six_month("ha")


async def test_cancelled_upload_stores_nothing(town):
    svc, son = town.svc, town.users["son"]
    await say(svc, son, "/summary")
    await press(svc, son, label(svc, "sm_report_a"))
    await press(svc, son, label(svc, "sm_upload"))
    said = await say(svc, son, "/cancel")
    assert said.templates == ["common/cancelled"]
    said = await act(svc, son, lambda: son.send_document(b"%PDF-1.4", "bao-cao.pdf"))
    assert "summary/report_sent" not in said.templates
    async with svc.db.reader() as session:
        assert (await session.exec(select(UnitReport))).all() == []


async def test_someone_with_several_units_picks_one(town):
    svc, dao = town.svc, town.users["dao"]
    async with svc.db.session() as session:
        await grant_role(session, town.members["dao"], town.union.school, Role.officer,
                         svc.clock.now())  # fmt: skip
        await session.commit()
    said = await say(svc, dao, "/summary")
    assert said.templates == ["summary/pick"] and "2 đơn vị" in said.text
    assert said.last.buttons == [["CĐCS Trường THPT Phan Thiết"], ["CĐCS Công ty May Phan Thiết"]]
    said = await press(svc, dao, "CĐCS Trường THPT Phan Thiết")
    assert "📊 CĐCS Trường THPT Phan Thiết" in said.text and "Đoàn viên: 4" in said.text
