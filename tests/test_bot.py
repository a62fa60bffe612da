"""Whole-bot behaviour: topic and lessons, the menu, retries, errors, long messages, language."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from bot.models import Pledge, ProcessedUpdate
from tests import factories
from tests.conftest import TOKEN
from tests.dialog import act, label, press, say


@pytest.fixture
async def lan(svc, bot, emulator, union):
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Nguyễn Thị Lan", "+84912111222"
        )
        await factories.link(session, svc, member, 701)
    return emulator.user(701, first_name="Lan")


async def test_topic_shows_the_year_the_term_and_the_deadlines_ahead(svc, lan):
    said = await say(svc, lan, "/topic")
    assert said.templates == ["topic/overview"]
    text = said.text
    assert "thực hành dân chủ và tăng cường pháp chế, bảo đảm kỷ cương xã hội" in text
    assert "Chuyên đề toàn khóa" in text
    # On 5/4/2024 the study month (March) is over; the pledge and the reports are ahead.
    assert "trước ngày 10/4/2024 (còn 4 ngày)" in text
    assert "chậm nhất ngày 6/5/2024" in text and "31/3/2024" not in text


async def test_the_overview_counts_the_days_afresh_each_day(svc, lan):
    """The overview is kept once per day for everyone: the next day's counts are new."""
    assert "(còn 4 ngày)" in (await say(svc, lan, "/topic")).text
    assert "(còn 4 ngày)" in (await say(svc, lan, "/topic")).text
    svc.clock.advance(timedelta(days=1))
    text = (await say(svc, lan, "/topic")).text
    assert "trước ngày 10/4/2024 (còn 3 ngày)" in text and "còn 4 ngày" not in text
    svc.clock.advance(timedelta(days=5))  # 11/4: the pledge deadline is behind
    assert "10/4/2024" not in (await say(svc, lan, "/topic")).text


async def test_lessons_page_with_buttons_and_end_with_the_pledge(svc, lan):
    await say(svc, lan, "/topic")
    said = await press(svc, lan, label(svc, "lesson_first"))
    assert said.templates == ["topic/lesson"]
    total = int(said.last.text.split("/", 1)[1].split(":", 1)[0])
    assert total >= 4
    assert said.last.buttons == [[label(svc, "next")]]
    for _ in range(total - 1):
        said = await press(svc, lan, label(svc, "next"))
        assert said.last.edited  # paging edits the same message, it does not flood the chat
    assert said.last.buttons[-1] == [label(svc, "open_pledge")]
    said = await press(svc, lan, label(svc, "open_pledge"))
    assert said.templates == ["pledge/intro", "pledge/step"]


async def test_a_button_whose_message_cannot_be_edited_is_answered_in_a_new_message(svc, lan):
    """Telegram refuses the edit ("message can't be edited"): the member still gets the
    page, as a new message, and no error."""
    await say(svc, lan, "/topic")
    own = next(m for m in reversed(lan.transcript) if not m.from_bot)  # the member's /topic
    said = await act(svc, lan, lambda: lan.press_data("tp:0", message_id=own.message_id))
    assert said.templates == ["topic/lesson"]
    assert not said.last.edited and said.last.buttons == [[label(svc, "next")]]


async def test_start_for_a_member_shows_the_menu_and_help_lists_commands(svc, lan):
    said = await say(svc, lan, "/start")
    assert said.templates == ["start/menu"] and "Nguyễn Thị Lan" in said.text
    said = await say(svc, lan, "/help")
    assert said.templates == ["help"] and "/pledge" in said.text
    said = await say(svc, lan, "/khonglenhnay")
    assert said.templates == ["help"]
    said = await say(svc, lan, "xin chào")
    assert said.templates == ["common/hint"]


async def test_command_menu_is_registered_in_vietnamese(svc, bot, emulator):
    commands = emulator.commands()
    names = [c["command"] for c in commands]
    assert names == [
        "start",
        "topic",
        "pledge",
        "mypledge",
        "reminders",
        "help",
        "language",
        "cancel",
    ]
    assert "bản đăng ký" in " ".join(c["description"] for c in commands)


async def test_language_switch_changes_every_following_message(svc, lan):
    said = await say(svc, lan, "/language")
    assert said.templates == ["language/choose"]
    said = await press(svc, lan, label(svc, "lang_en"))
    assert said.templates == ["language/set"] and "English" in said.text
    said = await say(svc, lan, "/topic")
    assert "Studying and following" in said.text or "practising democracy" in said.text
    await press(svc, lan, label(svc, "lesson_first", "en"))
    said = await say(svc, lan, "/pledge")
    assert "Part 1/4" in said.last.text


async def test_the_same_update_delivered_twice_has_one_effect(svc, lan, emulator):
    await say(svc, lan, "/pledge")
    update_id = await lan.send("Một câu trả lời duy nhất.")
    await lan.replies_until_idle(idle=0.3)
    emulator.redeliver(update_id)
    again = await lan.replies_until_idle(idle=0.3)
    assert again == []
    async with svc.db.reader() as session:
        [pledge] = (await session.exec(select(Pledge))).all()
        processed = (await session.exec(select(ProcessedUpdate))).all()
    assert pledge.draft == {"thought": "Một câu trả lời duy nhất."}
    assert len([p for p in processed if p.update_id == update_id]) == 1


async def test_a_stop_does_not_wait_out_telegrams_pause_and_the_message_is_answered_later(
    svc, lan, bot, emulator
):
    """Flood control answers getUpdates with 429 "retry after 60": PTB would sleep a minute,
    and a SIGTERM with it, past compose's and systemd's 30 s. The member's message waits at
    Telegram and is answered once the bot is back."""
    bot.stop_within = 0.5
    await bot.stop()
    emulator.fail_updates(retry_after=60)
    await bot.start()
    while not emulator.updates_refused:  # its first poll is answered 429
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # PTB is now in its 60 s pause
    await lan.send("/topic")
    started = time.monotonic()
    await asyncio.wait_for(bot.stop(), 20)
    assert time.monotonic() - started < 5
    assert not emulator.deliveries  # the message is still waiting at Telegram
    emulator.fail_updates(None)
    await bot.start()
    reply = await lan.next_reply(timeout=15)
    assert "Chuyên đề toàn khóa" in reply.text


async def test_a_pledge_longer_than_one_message_is_split_safely(svc, lan):
    await say(svc, lan, "/pledge")
    for index in range(4):
        await say(svc, lan, f"<{index}> " + "Làm theo Bác & " * 66)  # ~1000 characters each
    said = await press(svc, lan, label(svc, "submit"))
    said = await say(svc, lan, "/mypledge")
    assert len(said.messages) == 2  # the emulator refuses anything over 4096 characters
    assert all(len(m.text) <= 4096 for m in said.messages)
    joined = " ".join(" ".join(m.text.split()) for m in said.messages)
    assert joined.count("Làm theo Bác &") == 4 * 66  # nothing lost at the cut


async def test_an_unexpected_error_is_apologised_for_and_logged_without_the_token(
    svc, lan, caplog, monkeypatch
):
    from bot.logs import setup_logging
    from bot.services import pledges

    await say(svc, lan, "/pledge")
    await say(svc, lan, "Bản nháp phải còn nguyên.")

    async def broken(*args, **kwargs):
        raise RuntimeError(f"database exploded near {TOKEN} for +84912111222")

    monkeypatch.setattr(pledges, "answer", broken)
    monkeypatch.setattr(pledges, "answer_grouped", broken)  # SQLite's group-commit path
    caplog.set_level(logging.ERROR)
    setup_logging([TOKEN])
    said = await say(svc, lan, "Câu này gây lỗi.")
    assert said.templates == ["common/error"]
    assert "không có dữ liệu nào bị mất" in said.text.lower()
    logged = (
        "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
        + caplog.text
    )
    assert "database exploded" in logged
    assert TOKEN not in logged and "+84912111222" not in logged
    monkeypatch.undo()
    said = await say(svc, lan, "/mypledge")
    assert "Bản nháp phải còn nguyên." in said.text


async def test_a_reply_held_by_a_429_does_not_stall_other_members(svc, lan, emulator, union):
    import asyncio
    import time

    async with svc.db.session() as session:
        other = await factories.make_member(
            session, svc, union.school, "Đỗ Văn Khoa", "+84912555666"
        )
        await factories.link(session, svc, other, 702)
    khoa = emulator.user(702, first_name="Khoa")
    await say(svc, khoa, "/help")
    await say(svc, lan, "/help")
    emulator.fail_chat(lan.id, status=429, retry_after=1, times=1)
    await lan.send("/mypledge")
    await asyncio.sleep(0.05)  # Lan's update is in, its reply waiting out the 429
    started = time.monotonic()
    await khoa.send("/mypledge")
    reply = await khoa.next_reply(timeout=5)
    waited = time.monotonic() - started
    assert "Đỗ Văn Khoa" in reply.text
    assert waited < 0.9, waited  # did not wait behind Lan's retry_after
    assert "Nguyễn Thị Lan" in (await lan.next_reply(timeout=5)).text  # Lan still got hers
