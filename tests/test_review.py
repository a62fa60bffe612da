"""Officers' /pending lists, pledge review (approve / return), paper pledges, printable forms.

The 2024 pledge deadline is "trước ngày 10/4/2024": 9/4 is the last day. The clock starts
on 5/4/2024 08:00 (tests/conftest.py START).
"""

from __future__ import annotations

from datetime import datetime
from io import BytesIO

import docx
import pytest
from sqlmodel import select

from bot.models import Campaign, Pledge, PledgeReview, PledgeVersion, ReviewDecision, Role
from bot.services import tallies
from bot.services.roles import grant_role
from scheduler.outbox_worker import OutboxWorker
from tests import factories
from tests.dialog import act, label, press, say

ANSWERS = [
    "Học kỹ chuyên đề năm 2024 về thực hành dân chủ.",
    "Sống giản dị, trung thực, đoàn kết.",
    "Đúng giờ, nói đi đôi với làm.",
    "Công khai kế hoạch chủ nhiệm lớp.",
]
PAPER = [
    "Đọc tài liệu chuyên đề trên bản giấy.",
    "Tiết kiệm vật tư ở xưởng.",
    "Lắng nghe ý kiến tổ viên.",
    "Hoàn thành định mức đúng hạn.",
]


class School:
    """Dũng (school officer), Lan and Bình (school members on the bot), Chi (school, not on
    the bot), Hà (district leader), Minh (factory member on the bot)."""

    def __init__(self, svc, bot, emulator, union) -> None:
        self.svc, self.bot, self.emulator, self.union = svc, bot, emulator, union
        self.users: dict[str, object] = {}
        self.members: dict[str, object] = {}

    async def drain(self) -> dict[str, list]:
        """Deliver what the outbox holds; the messages each person got."""
        await OutboxWorker(self.svc, self.bot.application.bot).drain()
        got = {}
        for name, user in self.users.items():
            messages = await user.replies_until_idle(idle=0.05, timeout=3)
            if messages:
                got[name] = messages
        return got

    async def pledge_id(self, name: str) -> int:
        async with self.svc.db.reader() as session:
            pledge = (
                await session.exec(select(Pledge).where(Pledge.member_id == self.members[name].id))
            ).one()
        return pledge.id

    async def pledge(self, name: str) -> Pledge:
        async with self.svc.db.reader() as session:
            return (
                await session.exec(select(Pledge).where(Pledge.member_id == self.members[name].id))
            ).one()


@pytest.fixture
async def school(svc, bot, emulator, union) -> School:
    town = School(svc, bot, emulator, union)
    people = [
        ("dung", "Phạm Văn Dũng", union.school),
        ("lan", "Nguyễn Thị Lan", union.school),
        ("binh", "Trần Văn Bình", union.school),
        ("chi", "Lê Thị Chi", union.school),
        ("ha", "Võ Thị Hà", union.district),
        ("minh", "Đỗ Văn Minh", union.factory),
    ]
    async with svc.db.session() as session:
        for index, (name, full, unit) in enumerate(people):
            member = await factories.make_member(session, svc, unit, full, f"+8490300{index:04d}")
            town.members[name] = member
            if name != "chi":
                await factories.link(session, svc, member, 900 + index)
        await grant_role(session, town.members["dung"], union.school, Role.officer, svc.clock.now())
        await grant_role(session, town.members["ha"], union.district, Role.leader, svc.clock.now())
        await session.commit()
    for index, (name, _, _) in enumerate(people):
        if name != "chi":
            user = emulator.user(900 + index, first_name=name)
            await say(svc, user, "/help")
            town.users[name] = user
    return town


async def _file(svc, user, answers=ANSWERS) -> None:
    await say(svc, user, "/pledge")
    for answer in answers:
        await say(svc, user, answer)
    said = await press(svc, user, label(svc, "submit"))
    assert said.templates == ["pledge/submitted"]


async def _open_lans(school: School):
    """Dũng opens the awaiting list and Lan's pledge from it."""
    svc, dung = school.svc, school.users["dung"]
    await say(svc, dung, "/pending")
    said = await press(svc, dung, label(svc, "list_awaiting"))
    assert "Nguyễn Thị Lan" in said.text
    return await press(svc, dung, f"{label(svc, 'open_review')} 1. Nguyễn Thị Lan")


async def _pledge_tallies(svc):
    """Stored pledge counts, checked against a recount from the pledges themselves."""
    async with svc.db.reader() as session:
        _, stored = await tallies.stored(session)
        _, scratch = await tallies.counted_from_scratch(session)
    assert stored == scratch
    return stored


async def test_pending_shows_three_lists_to_a_grassroots_officer(school):
    svc = school.svc
    await _file(svc, school.users["lan"])
    dung = school.users["dung"]
    said = await say(svc, dung, "/pending")
    assert said.templates == ["pending/list"]
    assert "Chưa vào bot: 1" in said.text and "Chờ duyệt: 1" in said.text
    # Not pledged yet: Bình, Chi (📵), Dũng — Lan has pledged.
    assert "Lê Thị Chi 📵" in said.text and "Trần Văn Bình" in said.text
    assert "Nguyễn Thị Lan" not in said.text
    assert said.last.buttons == [
        [label(svc, "list_not_joined")],
        [label(svc, "list_awaiting")],
        [label(svc, "enter_paper")],
    ]
    said = await press(svc, dung, label(svc, "list_not_joined"))
    assert said.templates == ["review/not_joined"]
    assert "Lê Thị Chi" in said.text and "Trần Văn Bình" not in said.text
    said = await press(svc, dung, label(svc, "list_awaiting"))
    assert said.templates == ["review/awaiting"]
    assert "Nguyễn Thị Lan" in said.text and "Bấm tên để mở" in said.text
    assert said.last.buttons == [[f"{label(svc, 'open_review')} 1. Nguyễn Thị Lan"]]


async def test_a_long_awaiting_list_is_paged(school):
    svc, dung = school.svc, school.users["dung"]
    async with svc.db.session() as session:
        for index in range(10):
            member = await factories.make_member(
                session, svc, school.union.school, f"Hồ Thị Mai {index}", f"+8490399{index:04d}"
            )
            await factories.link(session, svc, member, 950 + index)
    for index in range(10):
        user = school.emulator.user(950 + index, first_name=f"mai{index}")
        await _file(svc, user)
    await say(svc, dung, "/pending")
    said = await press(svc, dung, label(svc, "list_awaiting"))
    assert "Tổng: 10 bản — trang 1/2" in said.text
    assert len(said.last.buttons) == 9  # 8 pledges and the page buttons
    said = await press(svc, dung, label(svc, "page_next"))
    assert "trang 2/2" in said.text and "9. " in said.text and "10. " in said.text


async def test_district_leader_sees_names_and_counts_but_not_the_text(school):
    svc, ha = school.svc, school.users["ha"]
    await _file(svc, school.users["lan"])
    said = await say(svc, ha, "/pending")
    assert said.templates == ["pending/list"]
    assert "Chờ duyệt: 1" in said.text and "Đỗ Văn Minh" in said.text
    assert label(svc, "enter_paper") not in str(said.last.buttons)
    said = await press(svc, ha, label(svc, "list_awaiting"))
    assert "Nguyễn Thị Lan" in said.text and "🔒" in said.text
    assert said.last.buttons == []
    pledge_id = await school.pledge_id("lan")
    said = await act(svc, ha, lambda: ha.press_data(f"rv:o:{pledge_id}"))
    assert said.templates == ["review/not_allowed"]
    assert ANSWERS[0] not in said.text
    said = await act(svc, ha, lambda: ha.press_data(f"rv:doc:{pledge_id}"))
    assert said.templates == ["review/not_allowed"]
    assert all(m.kind == "text" for m in said.messages)
    # Nor can she type in a school member's paper form: the search finds nobody she may.
    await say(svc, ha, "/enterpledge")
    said = await say(svc, ha, "nguyen thi lan")
    assert said.templates == ["review/found"] and "Không tìm thấy" in said.text


async def test_officer_approves_and_the_member_is_told(school):
    svc, dung, lan = school.svc, school.users["dung"], school.users["lan"]
    await _file(svc, lan)
    before = await _pledge_tallies(svc)
    assert before[(school.union.school.id, 2024)]["approved"] == 0
    said = await _open_lans(school)
    assert said.templates == ["review/screen"]
    assert "Nguyễn Thị Lan" in said.text and "CĐCS Trường THPT Phan Thiết" in said.text
    assert ANSWERS[2] in said.text and "trong hạn" in said.text
    said = await press(svc, dung, label(svc, "approve"))
    assert (
        said.templates == ["review/notice_approved", "review/approved"]
        and "Đoàn viên đã được báo" in said.text
    )
    got = await school.drain()
    [notice] = got["lan"]
    assert "đã được Phạm Văn Dũng duyệt" in notice.text
    assert notice.buttons == [[label(svc, "print_pledge")]]
    after = await _pledge_tallies(svc)
    assert after[(school.union.school.id, 2024)]["approved"] == 1
    pledge = await school.pledge("lan")
    assert pledge.review == ReviewDecision.approved
    # The same version cannot be decided twice (the button is still on the screen).
    said = await press(svc, dung, label(svc, "approve"))
    assert said.templates == ["review/already_decided"] and "Phạm Văn Dũng" in said.text
    said = await say(svc, lan, "/mypledge")
    assert "Đã được cán bộ công đoàn duyệt" in said.text


async def test_return_then_revision_after_the_deadline_until_the_revise_date(school):
    svc, dung, lan = school.svc, school.users["dung"], school.users["lan"]
    await _file(svc, lan)
    await _open_lans(school)
    said = await press(svc, dung, label(svc, "return"))
    assert said.templates == ["review/ask_comment"]
    said = await say(svc, dung, "...")
    assert said.templates == ["review/comment_empty"]
    said = await say(svc, dung, "x" * 1001)
    assert said.templates == ["review/comment_too_long"] and "1001" in said.text
    said = await say(svc, dung, "Phần 4 cần cụ thể hơn: nêu việc làm và thời gian.")
    assert said.templates == ["review/ask_date"]
    assert said.last.buttons == [[label(svc, f"days_{d}") for d in (3, 7, 14)]]
    said = await say(svc, dung, "1/4/2024")
    assert said.templates == ["review/date_past"] and "1/4/2024 đã qua" in said.text
    said = await say(svc, dung, "31/2/2024")
    assert said.templates == ["review/bad_date"]
    said = await say(svc, dung, "1/1/2030")
    assert said.templates == ["review/date_too_far"]
    assert (await school.pledge("lan")).review is None  # nothing recorded by bad dates
    said = await press(svc, dung, label(svc, "days_7"))
    assert (
        said.templates == ["review/notice_returned", "review/returned"] and "12/4/2024" in said.text
    )
    got = await school.drain()
    [notice] = got["lan"]
    assert "cần cụ thể hơn" in notice.text and "12/4/2024" in notice.text
    assert notice.buttons == [[label(svc, "open_pledge")]]
    pledge = await school.pledge("lan")
    assert pledge.review == ReviewDecision.returned and str(pledge.revise_by) == "2024-04-12"

    # 11/4: the pledge deadline (last day 9/4) has passed, the revise-by day has not.
    svc.clock.set(datetime(2024, 4, 11, 10, 0))
    said = await press(svc, lan, label(svc, "open_pledge"))
    assert said.templates == ["pledge/intro", "pledge/step"]
    for _ in range(3):
        await press(svc, lan, label(svc, "skip"))
    await say(svc, lan, "Tháng 5 công khai kế hoạch lớp; tháng 6 báo cáo kết quả.")
    said = await press(svc, lan, label(svc, "submit"))
    assert said.templates == ["pledge/submitted"] and "phiên bản 2" in said.text
    assert "12/4/2024" in said.text
    pledge = await school.pledge("lan")
    assert pledge.review is None and pledge.current_version == 2 and not pledge.late
    said = await say(svc, dung, "/pending")
    assert "Chờ duyệt: 1" in said.text
    said = await say(svc, lan, "/mypledge")
    assert "Đang chờ cán bộ công đoàn duyệt" in said.text

    # 13/4: past the revise-by day, revising is refused as before.
    svc.clock.set(datetime(2024, 4, 13, 9, 0))
    said = await say(svc, lan, "/pledge")
    assert said.templates == ["pledge/revise_closed"] and "12/4/2024" in said.text
    async with svc.db.reader() as session:
        reviews = (await session.exec(select(PledgeReview))).all()
    assert [(r.version, r.decision, r.reviewer_member_id) for r in reviews] == [
        (1, ReviewDecision.returned, school.members["dung"].id)
    ]
    await _pledge_tallies(svc)


async def test_deciding_on_a_version_that_changed_is_refused(school):
    svc, dung, lan = school.svc, school.users["dung"], school.users["lan"]
    await _file(svc, lan)
    await _open_lans(school)
    screen = dung.last_bot_message
    # Lan revises before the deadline while the screen is open.
    await say(svc, lan, "/pledge")
    await say(svc, lan, "Đọc thêm tài liệu về dân chủ ở cơ sở.")
    for _ in range(3):
        await press(svc, lan, label(svc, "skip"))
    await press(svc, lan, label(svc, "submit"))
    data = screen.callback_data(label(svc, "approve"))
    said = await act(svc, dung, lambda: dung.press(callback_data=data, message=screen))
    assert said.templates == ["review/version_changed"] and "phiên bản 2" in said.text
    data = screen.callback_data(label(svc, "return"))
    said = await act(svc, dung, lambda: dung.press(callback_data=data, message=screen))
    assert said.templates == ["review/version_changed"]
    assert (await school.pledge("lan")).review is None


async def test_a_forged_button_for_another_units_pledge_is_refused(school):
    svc, dung, minh = school.svc, school.users["dung"], school.users["minh"]
    await _file(svc, minh)
    pledge_id = await school.pledge_id("minh")
    for data in (f"rv:o:{pledge_id}", f"rv:ok:{pledge_id}:1", f"rv:ret:{pledge_id}:1"):
        said = await act(svc, dung, lambda data=data: dung.press_data(data))
        assert said.templates == ["review/not_allowed"], data
        assert ANSWERS[0] not in said.text
    assert (await school.pledge("minh")).review is None
    await dung.press_data("rv:o:abc")
    assert (await dung.wait_callback_answer()).get("show_alert") is True
    said = await act(svc, dung, lambda: dung.press_data(f"rv:aw:{school.union.factory.id}:0"))
    assert said.templates == ["review/unit_not_allowed"]


async def test_pending_and_the_review_buttons_are_refused_to_a_member(school):
    svc, lan = school.svc, school.users["lan"]
    await _file(svc, school.users["binh"])
    said = await say(svc, lan, "/pending")
    assert said.templates == ["pending/not_allowed"]
    said = await act(svc, lan, lambda: lan.press_data(f"rv:aw:{school.union.school.id}:0"))
    assert said.templates == ["review/unit_not_allowed"]
    binhs = await school.pledge_id("binh")
    said = await act(svc, lan, lambda: lan.press_data(f"rv:o:{binhs}"))
    assert said.templates == ["review/not_allowed"]
    said = await say(svc, lan, "/enterpledge")
    assert said.templates == ["review/paper_not_allowed"]


async def test_officer_enters_a_paper_pledge_for_a_member(school):
    svc, dung, binh = school.svc, school.users["dung"], school.users["binh"]
    said = await say(svc, dung, "/enterpledge")
    assert said.templates == ["review/ask_name"]
    said = await say(svc, dung, "b")
    assert said.templates == ["review/search_short"]
    said = await say(svc, dung, "minh")  # the factory's member: not his CĐCS
    assert said.templates == ["review/found"] and "Không tìm thấy" in said.text
    said = await say(svc, dung, "tran van binh")  # diacritics ignored
    assert "Trần Văn Bình" in said.text
    said = await press(svc, dung, f"{label(svc, 'pick_member')} Trần Văn Bình")
    assert said.templates == ["review/paper_intro", "pledge/step"]
    for answer in PAPER:
        said = await say(svc, dung, answer)
    assert said.templates == ["pledge/saved", "pledge/review"]
    said = await press(svc, dung, label(svc, "submit_paper"))
    assert said.templates == ["review/paper_submitted"] and "đúng hạn" in said.text
    async with svc.db.reader() as session:
        version = (await session.exec(select(PledgeVersion))).one()
    assert version.entered_by_member_id == school.members["dung"].id
    assert version.sections["style"] == PAPER[2]
    said = await say(svc, binh, "/mypledge")
    assert "Do Phạm Văn Dũng nhập từ bản đăng ký giấy" in said.text
    assert PAPER[3] in said.text
    # Already filed: a second paper form for Bình is refused, nothing changes.
    said = await act(svc, dung, lambda: dung.press_data(f"rv:pm:{school.members['binh'].id}"))
    assert said.templates == ["review/paper_already_filed"]
    # Minh's id forged into the pick button: refused.
    said = await act(svc, dung, lambda: dung.press_data(f"rv:pm:{school.members['minh'].id}"))
    assert said.templates == ["review/not_allowed"]
    await _pledge_tallies(svc)


def _document_text(data: bytes) -> str:
    document = docx.Document(BytesIO(data))
    texts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            for cell in row.cells:
                texts.append(cell.text)
    return "\n".join(texts)


async def test_printable_pledge_for_the_member_and_the_officer(school):
    svc, dung, lan, binh = (school.svc, *(school.users[n] for n in ("dung", "lan", "binh")))
    await _file(svc, lan)
    said = await say(svc, lan, "/mypledge")
    said = await press(svc, lan, label(svc, "print_pledge"))
    [document] = [m for m in said.messages if m.kind == "document"]
    assert document.document_name.endswith(".docx")
    text = _document_text(document.document)
    for expected in (
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "BẢN ĐĂNG KÝ HỌC TẬP VÀ LÀM THEO TƯ TƯỞNG, ĐẠO ĐỨC, PHONG CÁCH HỒ CHÍ MINH NĂM 2024",
        "Nguyễn Thị Lan",
        "CĐCS TRƯỜNG THPT PHAN THIẾT",
        "NGƯỜI ĐĂNG KÝ",
        "XÁC NHẬN CỦA THỦ TRƯỞNG ĐƠN VỊ",
        "ngày 5 tháng 4 năm 2024",
        *ANSWERS,
    ):
        assert expected in text, expected
    async with svc.db.reader() as session:
        pledge = (await session.exec(select(Pledge))).one()
        topic = (await session.get(Campaign, pledge.campaign_id)).topic
    assert topic in text
    runs = [r for p in docx.Document(BytesIO(document.document)).paragraphs for r in p.runs]
    assert {r.font.name for r in runs} == {"Times New Roman"}

    await _open_lans(school)
    said = await press(svc, dung, label(svc, "print_pledge"))
    [document] = [m for m in said.messages if m.kind == "document"]
    assert "Nguyễn Thị Lan" in _document_text(document.document)

    # Bình (a plain member) forges the officer's button with Lan's pledge id.
    lans = await school.pledge_id("lan")
    said = await act(svc, binh, lambda: binh.press_data(f"rv:doc:{lans}"))
    assert said.templates == ["review/not_allowed"]
    assert all(m.kind == "text" for m in said.messages)
    # Bình's own button gives his own (none yet), never someone else's.
    said = await act(svc, binh, lambda: binh.press_data("rv:mine"))
    assert said.templates == ["review/doc_nothing"]
