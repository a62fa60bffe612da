"""The pledge wizard end to end: steps, bad input, restarts, deadlines and versions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from bot.models import ChatState, Pledge, PledgeStatus, PledgeVersion
from tests import factories
from tests.dialog import act, label, press, say

ANSWERS = [
    "Đọc kỹ chuyên đề, làm theo lời Bác về thực hành dân chủ.",
    "Sống giản dị, trung thực, đoàn kết với đồng nghiệp.",
    "Lắng nghe ý kiến học sinh và phụ huynh trước khi quyết định.",
    "Công khai kế hoạch chủ nhiệm lớp; giảm giấy tờ không cần thiết.",
]


@pytest.fixture
async def lan(svc, bot, emulator, union):
    """A member of the school's union, already on the bot."""
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Nguyễn Thị Lan", "+84912111222"
        )
        await factories.link(session, svc, member, 601)
    user = emulator.user(601, first_name="Lan")
    user.member_id = member.id
    return user


async def _pledge_rows(svc):
    async with svc.db.reader() as session:
        pledges = list((await session.exec(select(Pledge))).all())
        versions = list((await session.exec(select(PledgeVersion))).all())
        states = list((await session.exec(select(ChatState))).all())
    return pledges, versions, states


async def _fill_all(svc, user):
    said = await say(svc, user, "/pledge")
    assert said.templates == ["pledge/intro", "pledge/step"]
    for answer in ANSWERS:
        said = await say(svc, user, answer)
        assert said.templates[0] == "pledge/saved"
    assert said.templates[-1] == "pledge/review"
    return said


async def test_an_answer_is_confirmed_in_the_same_message_as_the_next_step(svc, lan):
    await say(svc, lan, "/pledge")
    said = await say(svc, lan, ANSWERS[0])
    # One message, not two: one buzz on the phone, one call against the bot's send rate.
    assert len(said.messages) == 1
    assert said.last.text.startswith("✔️ Đã lưu.")
    assert "Phần 2/4" in said.last.text
    assert said.last.buttons == [[label(svc, "back"), label(svc, "skip")], [label(svc, "cancel")]]


async def test_member_files_a_pledge_step_by_step(svc, lan):
    said = await say(svc, lan, "/pledge")
    assert "Phần 1/4" in said.last.text
    assert "trước ngày 10/4/2024" in said.messages[0].text
    assert said.last.buttons == [[label(svc, "skip")], [label(svc, "cancel")]]
    for answer in ANSWERS:
        said = await say(svc, lan, answer)
    assert said.templates == ["pledge/saved", "pledge/review"]
    assert all(answer in said.last.text for answer in ANSWERS)

    said = await press(svc, lan, label(svc, "submit"))
    assert said.templates == ["pledge/submitted"]
    assert "đúng hạn" in said.text and "9/4/2024" in said.text

    pledges, versions, states = await _pledge_rows(svc)
    [pledge] = pledges
    assert (pledge.status, pledge.late, pledge.current_version) == (
        PledgeStatus.submitted,
        False,
        1,
    )
    assert list(versions[0].sections.values()) == ANSWERS
    assert states == []

    said = await say(svc, lan, "/mypledge")
    assert said.templates == ["pledge/mine"]
    assert "đã nộp đúng hạn" in said.text and "trước ngày 10/4/2024" in said.text
    assert ANSWERS[3] in said.text


async def test_back_and_skip_move_between_sections_and_keep_answers(svc, lan):
    await say(svc, lan, "/pledge")
    await say(svc, lan, ANSWERS[0])
    said = await press(svc, lan, label(svc, "back"))
    assert said.templates == ["pledge/step"]
    assert "Phần 1/4" in said.last.text and ANSWERS[0] in said.last.text
    said = await press(svc, lan, label(svc, "skip"))
    assert "Phần 2/4" in said.last.text
    for _ in range(3):
        said = await press(svc, lan, label(svc, "skip"))
    assert said.templates == ["pledge/review"]
    said = await press(svc, lan, label(svc, "submit"))
    assert said.templates == ["pledge/missing_sections"]
    pledges, versions, _ = await _pledge_rows(svc)
    assert versions == [] and pledges[0].draft == {"thought": ANSWERS[0]}


@pytest.mark.parametrize(
    ("text", "template"),
    [
        ("x" * 5000, "pledge/too_long"),
        ("x" * 1001, "pledge/too_long"),
        ("...", "pledge/empty"),
        ("\u200b", "pledge/empty"),
    ],
)
async def test_bad_section_text_is_refused_and_nothing_is_lost(svc, lan, text, template):
    await say(svc, lan, "/pledge")
    await say(svc, lan, ANSWERS[0])
    before = await _pledge_rows(svc)
    said = await say(svc, lan, text)
    assert said.templates == [template]
    if template == "pledge/too_long":
        assert str(len(text)) in said.text and "1000" in said.text
    after = await _pledge_rows(svc)
    assert after[0][0].draft == before[0][0].draft
    assert after[2][0].step == before[2][0].step == 1


async def test_exactly_1000_characters_are_accepted(svc, lan):
    await say(svc, lan, "/pledge")
    said = await say(svc, lan, "đ" * 1000)
    assert said.templates[0] == "pledge/saved"


async def test_markup_and_emoji_are_kept_as_typed_and_shown_escaped(svc, lan):
    tricky = "<b>Tôi</b> & bạn <script>x</script> 😀 &amp; </i>"
    await say(svc, lan, "/pledge")
    said = await say(svc, lan, tricky)
    assert said.templates[0] == "pledge/saved"
    pledges, _, _ = await _pledge_rows(svc)
    assert pledges[0].draft["thought"] == tricky
    said = await press(svc, lan, label(svc, "back"))
    assert tricky in said.last.text  # the emulator parsed the bot's HTML like Telegram does


async def test_sticker_or_photo_during_a_step_asks_for_text(svc, lan):
    await say(svc, lan, "/pledge")
    for send in (lan.send_sticker, lan.send_photo):
        said = await act(svc, lan, send)
        assert said.templates == ["common/text_expected"]
    _, _, states = await _pledge_rows(svc)
    assert states[0].step == 0


async def test_two_fast_messages_each_fill_one_section_in_order(svc, lan):
    await say(svc, lan, "/pledge")
    await lan.send(ANSWERS[0])
    await lan.send(ANSWERS[1])
    await lan.replies_until_idle(idle=0.3, timeout=10)
    pledges, _, states = await _pledge_rows(svc)
    assert pledges[0].draft == {"thought": ANSWERS[0], "ethics": ANSWERS[1]}
    assert states[0].step == 2


async def test_stale_and_forged_buttons_change_nothing(svc, lan, emulator):
    said = await say(svc, lan, "/pledge")
    first_step = said.last
    await say(svc, lan, ANSWERS[0])
    before = await _pledge_rows(svc)
    for data in (
        first_step.callback_data(label(svc, "skip")),
        "pl:submit:999",
        "pl:drop:1",
        "pl:back:x",
        "garbage",
        "tp:99",
        "lang:fr",
    ):
        mark = len(svc.renderer.history)
        await lan.press_data(data)
        answer = await lan.wait_callback_answer()
        assert answer.get("show_alert") is True, data
        assert list(svc.renderer.history)[mark:] == ["common/stale_button"], data
    after = await _pledge_rows(svc)
    assert [p.draft for p in after[0]] == [p.draft for p in before[0]]
    assert after[2][0].step == before[2][0].step


async def test_another_members_button_cannot_touch_my_pledge(svc, lan, emulator, union):
    said = await say(svc, lan, "/pledge")
    data = said.last.callback_data(label(svc, "skip"))
    async with svc.db.session() as session:
        other = await factories.make_member(session, svc, union.school, "Kẻ Lạ Mặt", "+84912999000")
        await factories.link(session, svc, other, 602)
    mallory = emulator.user(602, first_name="M")
    await say(svc, mallory, "/help")
    await mallory.press_data(data)
    answer = await mallory.wait_callback_answer()
    assert answer.get("show_alert") is True
    _, _, states = await _pledge_rows(svc)
    assert [s.step for s in states] == [0]


async def test_a_restart_continues_where_the_member_was(svc, lan, bot):
    await say(svc, lan, "/pledge")
    await say(svc, lan, ANSWERS[0])
    await bot.restart()  # a fresh Application: nothing in memory survives
    said = await say(svc, lan, ANSWERS[1])
    assert said.templates == ["pledge/saved", "pledge/step"]
    assert "Phần 3/4" in said.last.text
    said = await say(svc, lan, "/pledge")  # re-opening resumes, it does not restart
    assert "Phần 3/4" in said.last.text


async def test_cancel_keeps_the_draft_for_later(svc, lan):
    await say(svc, lan, "/pledge")
    await say(svc, lan, ANSWERS[0])
    said = await say(svc, lan, "/cancel")
    assert said.templates == ["common/cancelled"]
    said = await say(svc, lan, "/cancel")
    assert said.templates == ["common/nothing_to_cancel"]
    said = await say(svc, lan, "/mypledge")
    assert "bản nháp" in said.text and ANSWERS[0] in said.text
    said = await say(svc, lan, "/pledge")
    assert "Phần 1/4" in said.last.text and ANSWERS[0] in said.last.text


async def test_revisions_are_versions_until_the_deadline_then_closed(svc, lan):
    await _fill_all(svc, lan)
    await press(svc, lan, label(svc, "submit"))
    said = await say(svc, lan, "/pledge")
    assert "sửa bản đã gửi" in said.messages[0].text and ANSWERS[0] in said.last.text
    await say(svc, lan, "Bản sửa: học thêm về pháp luật lao động.")
    for _ in range(3):
        said = await press(svc, lan, label(svc, "skip"))
    said = await press(svc, lan, label(svc, "submit"))
    assert said.templates == ["pledge/submitted"] and "phiên bản 2" in said.text
    _, versions, _ = await _pledge_rows(svc)
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].sections["thought"] == ANSWERS[0]
    assert versions[1].sections["thought"].startswith("Bản sửa")

    svc.clock.advance(timedelta(days=5))  # 10/4: the day the deadline "before 10/4" closes
    said = await say(svc, lan, "/pledge")
    assert said.templates == ["pledge/revise_closed"]
    said = await say(svc, lan, "/mypledge")
    assert "đã nộp đúng hạn" in said.text and "phiên bản 2" in said.text


async def test_first_filing_after_the_deadline_is_taken_and_marked_late(svc, lan):
    svc.clock.advance(timedelta(days=5))
    await _fill_all(svc, lan)
    said = await press(svc, lan, label(svc, "submit"))
    assert "nộp muộn" in said.text
    pledges, versions, _ = await _pledge_rows(svc)
    assert pledges[0].late and versions[0].late
    said = await say(svc, lan, "/mypledge")
    assert "đã nộp muộn" in said.text


async def test_unit_override_of_the_deadline_applies_to_its_subtree(svc, lan, union):
    from datetime import date

    async with svc.db.session() as session:
        await factories.override_pledge_deadline(session, svc, union.school, date(2024, 4, 12))
    said = await say(svc, lan, "/topic")
    assert "chậm nhất ngày 12/4/2024" in said.text
    svc.clock.advance(timedelta(days=6))  # 11/4: late for the province, on time here
    await _fill_all(svc, lan)
    said = await press(svc, lan, label(svc, "submit"))
    assert "đúng hạn" in said.text


async def test_pledge_before_joining_points_to_the_invite(svc, bot, emulator, union):
    stranger = emulator.user(603, first_name="S")
    for command in ("/pledge", "/mypledge", "/topic"):
        said = await say(svc, stranger, command)
        assert said.templates == ["common/join_first"], command
    _, _, states = await _pledge_rows(svc)
    assert states == []


async def test_members_see_only_their_own_pledge(svc, lan, emulator, union):
    await _fill_all(svc, lan)
    await press(svc, lan, label(svc, "submit"))
    async with svc.db.session() as session:
        other = await factories.make_member(
            session, svc, union.school, "Trần Văn Bình", "+84912333444"
        )
        await factories.link(session, svc, other, 604)
    binh = emulator.user(604, first_name="Bình")
    said = await say(svc, binh, "/mypledge")
    assert "chưa viết" in said.text
    assert not any(answer in said.text for answer in ANSWERS)
