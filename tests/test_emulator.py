"""The local Telegram Bot API emulator, driven over real HTTP by httpx and by PTB itself."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dtm
import html
import itertools
import json
import time

import httpx
import pytest
import telegram
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot.channels.emulator import (
    BotApiEmulator,
    HtmlParseError,
    make_png,
    parse_html,
    utf16_len,
)

PNG_2X3 = make_png(2, 3)


@pytest.fixture
async def emu():
    emulator = BotApiEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def api(emu):
    """Raw HTTP access to the emulated Bot API of the emulator's bot."""
    async with httpx.AsyncClient(base_url=f"{emu.base_url}/bot{emu.token}") as client:
        yield client


@pytest.fixture
async def bot(emu):
    tg_bot = telegram.Bot(emu.token, base_url=emu.api_base_url, base_file_url=emu.file_base_url)
    async with tg_bot:
        yield tg_bot


@pytest.fixture
async def alice(emu):
    user = emu.user(1001, first_name="Lan", last_name="Nguyễn", language_code="vi")
    await user.start()  # the chat exists for the bot from now on
    return user


@pytest.fixture
async def echo_app(emu):
    """A tiny real PTB Application polling the emulator: echoes text, edits on button press."""

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        text = update.effective_message.text
        keyboard = InlineKeyboardMarkup(
            [[InlineKeyboardButton("Tiếp ›", callback_data=f"next:{len(text)}")]]
        )
        await update.effective_message.reply_text(
            f"<b>Bạn viết:</b> {html.escape(text)}", parse_mode="HTML", reply_markup=keyboard
        )

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        code = context.args[0] if context.args else "-"
        await update.effective_message.reply_text(f"start code={code}")

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        await query.answer("Đã nhận / Got it")
        await query.edit_message_text(f"Bạn bấm / You pressed: {query.data}")

    async def contact(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        shared = update.effective_message.contact
        own = shared.user_id == update.effective_user.id
        await update.effective_message.reply_text(f"phone={shared.phone_number} own={own}")

    async def member(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.bot_data.setdefault("member_updates", []).append(
            update.my_chat_member.new_chat_member.status
        )

    app = (
        ApplicationBuilder()
        .token(emu.token)
        .base_url(emu.api_base_url)
        .base_file_url(emu.file_base_url)
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(button))
    app.add_handler(MessageHandler(filters.CONTACT, contact))
    app.add_handler(ChatMemberHandler(member, ChatMemberHandler.MY_CHAT_MEMBER))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=1)
    yield app
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


# ---------------------------------------------------------------------------------------------
# HTTP surface
# ---------------------------------------------------------------------------------------------


async def test_get_me_through_ptb(bot, emu):
    me = await bot.get_me()
    assert me.username == "chuyende_demo_bot"
    assert me.id == 123456
    assert me.is_bot
    assert emu.stats["getMe"] >= 1


async def test_wrong_token_is_unauthorized_and_unknown_method_not_found(emu, api):
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{emu.base_url}/bot999:WRONG/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}

    response = await api.post("/frobnicate")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}

    request = HTTPXRequest()
    wrong = telegram.Bot("999:WRONG", base_url=emu.api_base_url, request=request)
    try:
        with pytest.raises(InvalidToken):
            await wrong.initialize()
    finally:
        await request.shutdown()


async def test_method_names_are_case_insensitive_and_get_works(api):
    response = await api.get("/getme")
    assert response.json()["result"]["username"] == "chuyende_demo_bot"


async def test_parameters_as_json_form_and_query(api, alice):
    by_json = await api.post("/sendMessage", json={"chat_id": alice.id, "text": "json"})
    by_form = await api.post("/sendMessage", data={"chat_id": str(alice.id), "text": "form"})
    by_query = await api.get("/sendMessage", params={"chat_id": alice.id, "text": "query"})
    assert [r.json()["result"]["text"] for r in (by_json, by_form, by_query)] == [
        "json",
        "form",
        "query",
    ]
    # Objects arrive JSON-encoded in form bodies, as PTB sends them.
    markup = json.dumps({"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]})
    response = await api.post(
        "/sendMessage", data={"chat_id": alice.id, "text": "x", "reply_markup": markup}
    )
    assert response.json()["result"]["reply_markup"]["inline_keyboard"][0][0]["text"] == "A"
    assert [m.text for m in alice.bot_messages] == ["json", "form", "query", "x"]


async def test_long_poll_does_not_block_other_requests(emu, api):
    poll = asyncio.create_task(api.post("/getUpdates", json={"timeout": 5}))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    response = await api.post("/getMe")
    assert response.json()["ok"]
    assert time.monotonic() - started < 1
    assert not poll.done()
    user = emu.user(2002, "Minh")
    await user.send("hello")
    result = (await poll).json()["result"]
    assert [u["message"]["text"] for u in result] == ["hello"]


async def test_fifty_concurrent_sends(emu, api, alice):
    responses = await asyncio.gather(
        *(api.post("/sendMessage", json={"chat_id": alice.id, "text": f"n{i}"}) for i in range(50))
    )
    assert all(r.status_code == 200 for r in responses)
    ids = {r.json()["result"]["message_id"] for r in responses}
    assert len(ids) == 50
    assert emu.stats["sendMessage"] == 50
    assert len([d for d in emu.deliveries if d.method == "sendMessage"]) == 50
    times = [d.monotonic for d in emu.deliveries]
    assert times == sorted(times)


# ---------------------------------------------------------------------------------------------
# Updates and long polling
# ---------------------------------------------------------------------------------------------


async def test_get_updates_offsets_limit_and_redelivery(emu, api):
    user = emu.user(3003, "Hoa")
    first = await user.send("one")
    second = await user.send("two")
    third = await user.send("three")
    assert first < second < third

    batch = (await api.post("/getUpdates", json={"limit": 2})).json()["result"]
    assert [u["update_id"] for u in batch] == [first, second]
    # Not confirmed yet: the same updates come again.
    again = (await api.post("/getUpdates", json={})).json()["result"]
    assert [u["update_id"] for u in again] == [first, second, third]
    # The offset confirms everything below it.
    rest = (await api.post("/getUpdates", json={"offset": third})).json()["result"]
    assert [u["update_id"] for u in rest] == [third]
    empty = (await api.post("/getUpdates", json={"offset": third + 1})).json()["result"]
    assert empty == []
    await emu.wait_idle(confirmed=True, timeout=0.1)

    # A redelivery repeats an update with its original update_id.
    emu.redeliver(second)
    repeated = (await api.post("/getUpdates", json={"offset": third + 1})).json()["result"]
    assert [(u["update_id"], u["message"]["text"]) for u in repeated] == [(second, "two")]
    after = (await api.post("/getUpdates", json={"offset": second + 1})).json()["result"]
    assert after == []


async def test_long_poll_times_out_empty(api):
    started = time.monotonic()
    response = await api.post("/getUpdates", json={"timeout": 1})
    assert response.json() == {"ok": True, "result": []}
    assert 0.9 < time.monotonic() - started < 3


async def test_allowed_updates_filter(emu, api):
    user = emu.user(3004, "Tú")
    await user.start()
    await user.block_bot()
    result = (await api.post("/getUpdates", json={"allowed_updates": ["my_chat_member"]})).json()[
        "result"
    ]
    assert [next(k for k in u if k != "update_id") for u in result] == ["my_chat_member"]
    assert emu.pending_updates() == 1  # not confirmed yet


async def test_second_poller_conflicts_with_first(api):
    first = asyncio.create_task(api.post("/getUpdates", json={"timeout": 5}))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(api.post("/getUpdates", json={"timeout": 0}))
    first_response = await first
    assert first_response.status_code == 409
    assert "terminated by other getUpdates request" in first_response.json()["description"]
    assert (await second).json()["ok"]


async def test_push_update_raw(emu, bot):
    update_id = emu.push_update(
        {
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 1, "type": "private", "first_name": "X"},
                "text": "raw",
            }
        }
    )
    updates = await bot.get_updates(timeout=0)
    assert [(u.update_id, u.message.text) for u in updates] == [(update_id, "raw")]


async def test_built_updates_are_valid_for_ptb(emu, bot):
    lan = emu.user(4004, "Lan", "Trần Thị", username="lan_tt", phone="+84912345678")
    group = emu.group(-100200, "Tổ 1", members=[lan])
    await lan.start("ABC")
    await lan.share_contact()
    await lan.send_sticker()
    await lan.send_photo()
    await lan.send("/summary@chuyende_demo_bot", chat=group)
    assert await lan.send("chào cả tổ", chat=group) is None  # privacy mode: the bot can't see it
    await lan.block_bot()
    await lan.unblock_bot()

    updates = await bot.get_updates(timeout=0)
    start, contact, sticker, photo, command, blocked, unblocked = updates
    assert start.message.text == "/start ABC"
    assert start.message.entities[0].type == "bot_command"
    assert start.message.chat.type == "private"
    assert start.message.chat.id == lan.id == start.message.from_user.id
    assert start.message.from_user.language_code == "vi"
    assert contact.message.contact.phone_number == "+84912345678"
    assert contact.message.contact.user_id == lan.id
    assert sticker.message.sticker.emoji == "👍"
    assert photo.message.photo[-1].width == 1
    assert command.message.chat.type == "group"
    assert command.message.chat.id == -100200
    assert command.message.text.startswith("/summary")
    assert blocked.my_chat_member.new_chat_member.status == "kicked"
    assert unblocked.my_chat_member.new_chat_member.status == "member"
    assert [u.update_id for u in updates] == sorted(u.update_id for u in updates)


# ---------------------------------------------------------------------------------------------
# Round trips with a real PTB Application
# ---------------------------------------------------------------------------------------------


async def test_echo_round_trip_with_button_and_edit(emu, echo_app):
    lan = emu.user(1001, "Lan", "Nguyễn")
    await lan.start("ABC")
    assert (await lan.next_reply()).text == "start code=ABC"

    await lan.send("Xin chào <bạn> & tổ")
    reply = await lan.next_reply()
    assert reply.text == "Bạn viết: Xin chào <bạn> & tổ"
    assert reply.html == "<b>Bạn viết:</b> Xin chào &lt;bạn&gt; &amp; tổ"
    assert reply.entities == [{"type": "bold", "offset": 0, "length": 9}]
    assert reply.buttons == [["Tiếp ›"]]

    await lan.press("Tiếp ›")
    edited = await lan.next_reply()
    assert edited.edited
    assert edited.message_id == reply.message_id
    assert edited.text == "Bạn bấm / You pressed: next:19"
    assert edited.buttons == []  # editMessageText without reply_markup drops the keyboard
    answer = await lan.wait_callback_answer()
    assert answer["text"] == "Đã nhận / Got it"
    assert emu.unanswered_callback_queries() == []
    assert [m.from_bot for m in lan.transcript] == [False, True, False, True]
    assert lan.last_bot_message.text.startswith("Bạn bấm")


async def test_contact_and_block_reach_the_app(emu, echo_app):
    lan = emu.user(1002, "Lan")
    await lan.share_contact("+84912345678")
    assert (await lan.next_reply()).text == "phone=+84912345678 own=True"
    await lan.share_contact("0987654321", user_id=555)
    assert (await lan.next_reply()).text == "phone=0987654321 own=False"
    await lan.block_bot()
    await lan.unblock_bot()
    await emu.wait_idle()
    for _ in range(50):
        if len(echo_app.bot_data.get("member_updates", [])) == 2:
            break
        await asyncio.sleep(0.02)
    assert echo_app.bot_data["member_updates"] == ["kicked", "member"]


async def test_replies_until_idle_and_next_reply_timeout(emu, echo_app):
    lan = emu.user(1003, "Lan")
    await lan.send("một")
    await lan.send("hai")
    replies = await lan.replies_until_idle(idle=0.3)
    assert [r.text for r in replies] == ["Bạn viết: một", "Bạn viết: hai"]
    with pytest.raises(AssertionError, match="no reply from the bot"):
        await lan.next_reply(timeout=0.2)


async def test_press_unknown_button_lists_buttons(emu, echo_app):
    lan = emu.user(1004, "Lan")
    await lan.send("x")
    await lan.next_reply()
    with pytest.raises(AssertionError, match="Tiếp"):
        await lan.press("Không có")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


async def test_document_upload_get_file_and_download(bot, alice, emu):
    payload = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    sent = await bot.send_document(
        alice.id, payload, filename="Báo cáo 6 tháng.docx", caption="<i>Báo cáo</i>",
        parse_mode="HTML",
    )  # fmt: skip
    assert sent.document.file_name == "Báo cáo 6 tháng.docx"
    assert sent.document.file_size == len(payload)
    assert sent.caption == "Báo cáo"
    file = await bot.get_file(sent.document.file_id)
    assert file.file_path.startswith(f"{emu.base_url}/file/bot{emu.token}/documents/")
    assert bytes(await file.download_as_bytearray()) == payload
    message = alice.last_bot_message
    assert message.kind == "document"
    assert message.document == payload
    assert message.text == "Báo cáo"

    # The same file again by file_id, without uploading.
    again = await bot.send_document(alice.id, sent.document.file_id)
    assert again.document.file_id == sent.document.file_id


async def test_photo_upload(bot, alice):
    sent = await bot.send_photo(alice.id, PNG_2X3, caption="Biểu đồ")
    assert (sent.photo[-1].width, sent.photo[-1].height) == (2, 3)
    assert alice.last_bot_message.photo == PNG_2X3
    file = await bot.get_file(sent.photo[-1].file_id)
    assert bytes(await file.download_as_bytearray()) == PNG_2X3
    with pytest.raises(BadRequest, match="Image_process_failed"):
        await bot.send_photo(alice.id, b"not an image")


async def test_file_errors(bot, emu, alice):
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("nope")
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await bot.send_document(alice.id, "nope")
    with pytest.raises(BadRequest, match="File must be non-empty"):
        await bot.send_document(alice.id, b"", filename="empty.txt")
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"{emu.file_base_url}{emu.token}/documents/none.pdf")
    assert missing.status_code == 404


# ---------------------------------------------------------------------------------------------
# As strict as Telegram
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "Message text is empty"),
        ({"text": "  \n "}, "Message text is empty"),
        ({"text": "<b></b>", "parse_mode": "HTML"}, "Message text is empty"),
        ({"text": "x" * 4097}, "Message is too long"),
        ({"text": "😀" * 2049}, "Message is too long"),  # 2049 characters, 4098 UTF-16 units
        ({"text": "<b>" + "x" * 4097 + "</b>", "parse_mode": "HTML"}, "Message is too long"),
        (
            {"text": "<div>x</div>", "parse_mode": "HTML"},
            'Can\'t parse entities: unsupported start tag "div" at byte offset 0',
        ),
        (
            {"text": "a < b", "parse_mode": "HTML"},
            'Can\'t parse entities: unsupported start tag "" at byte offset 2',
        ),
        ({"text": "Tom & Jerry", "parse_mode": "HTML"}, "Can't parse entities: unsupported html"),
        (
            {"text": "<b>đậm", "parse_mode": "HTML"},
            "Can't parse entities: can't find end tag corresponding to start tag \"b\"",
        ),
        (
            {"text": "<b>x</i>", "parse_mode": "HTML"},
            'Can\'t parse entities: unmatched end tag at byte offset 4, expected "</b>", '
            'found "</i>"',
        ),
        (
            {"text": "<span>x</span>", "parse_mode": "HTML"},
            'Can\'t parse entities: tag "span" must have class "tg-spoiler"',
        ),
        ({"text": "x", "parse_mode": "HTMLX"}, "Unsupported parse_mode"),
    ],
)
async def test_send_message_bad_requests(bot, alice, kwargs, message):
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(alice.id, **kwargs)
    assert caught.value.message.startswith(message)


async def test_limits_count_utf16_after_entities(bot, alice):
    at_limit = await bot.send_message(alice.id, "&amp;" * 4096, parse_mode="HTML")
    assert at_limit.text == "&" * 4096
    emoji = await bot.send_message(alice.id, "😀" * 2048)
    assert utf16_len(emoji.text) == 4096
    caption = await bot.send_document(alice.id, b"x", filename="a.txt", caption="c" * 1024)
    assert len(caption.caption) == 1024
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_document(alice.id, b"x", filename="a.txt", caption="c" * 1025)


async def test_telegram_html_subset_is_accepted(bot, alice):
    text = (
        "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s>"
        '<strike>k</strike><del>d</del><a href="https://t.me/chuyende_demo_bot?start=A&amp;B">'
        'a</a><code>c</code><pre><code class="language-python">p</code></pre>'
        "<blockquote>q</blockquote><blockquote expandable>x</blockquote>"
        '<span class="tg-spoiler">h</span><tg-spoiler>t</tg-spoiler>'
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji> &lt;&gt;&quot;&#39;&#x1F600;'
    )
    sent = await bot.send_message(alice.id, text, parse_mode="HTML")
    assert sent.text.endswith("👍 <>\"'😀")
    types = [e.type for e in sent.entities]
    for expected in (
        "bold", "italic", "underline", "strikethrough", "text_link", "code", "pre",
        "blockquote", "expandable_blockquote", "spoiler", "custom_emoji",
    ):  # fmt: skip
        assert expected in types
    link = next(e for e in sent.entities if e.type == "text_link")
    assert link.url == "https://t.me/chuyende_demo_bot?start=A&B"
    pre = next(e for e in sent.entities if e.type == "pre")
    assert pre.language == "python"
    assert alice.last_bot_message.html == text


async def test_keyboard_validation(bot, alice):
    ok = InlineKeyboardMarkup([[InlineKeyboardButton("Đồng ý", callback_data="đ" * 32)]])
    await bot.send_message(alice.id, "ok", reply_markup=ok)  # 64 bytes in UTF-8
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="đ" * 33)]])
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(alice.id, "x", reply_markup=too_long)
    text_only = InlineKeyboardMarkup([[InlineKeyboardButton("x")]])
    with pytest.raises(BadRequest, match=r"(?i)text buttons are unallowed in the inline keyboard"):
        await bot.send_message(alice.id, "x", reply_markup=text_only)
    empty_text = InlineKeyboardMarkup([[InlineKeyboardButton("", callback_data="a")]])
    with pytest.raises(BadRequest, match=r"(?i)text buttons are unallowed in the inline keyboard"):
        await bot.send_message(alice.id, "x", reply_markup=empty_text)
    bad_url = InlineKeyboardMarkup([[InlineKeyboardButton("x", url="javascript:alert(1)")]])
    with pytest.raises(BadRequest, match="Button_url_invalid"):
        await bot.send_message(alice.id, "x", reply_markup=bad_url)


async def test_reply_keyboard_with_contact_request_and_removal(bot, alice):
    keyboard = telegram.ReplyKeyboardMarkup(
        [[KeyboardButton("📱 Gửi số điện thoại", request_contact=True)]], one_time_keyboard=True
    )
    await bot.send_message(alice.id, "Cho mình xin số điện thoại", reply_markup=keyboard)
    assert alice.contact_requested
    assert alice.last_bot_message.requests_contact
    assert alice.reply_keyboard == [["📱 Gửi số điện thoại"]]
    await alice.share_contact("+84900000001")
    assert not alice.contact_requested  # one-time keyboards hide after use
    await bot.send_message(alice.id, "Giữ lại", reply_markup=keyboard)
    await bot.send_message(alice.id, "Xong", reply_markup=telegram.ReplyKeyboardRemove())
    assert alice.reply_keyboard == []


async def test_unknown_chat_and_replies(bot, emu, alice):
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(424242, "hi")
    emu.user(5005, "Chưa mở chat")  # exists, but never wrote to the bot
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(5005, "hi")
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(alice.id, "hi", reply_to_message_id=999)
    replied = await bot.send_message(alice.id, "hi", reply_to_message_id=1)
    assert replied.reply_to_message.text == "/start"


async def test_edit_rules(bot, alice):
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]])
    sent = await bot.send_message(alice.id, "<b>x</b>", parse_mode="HTML", reply_markup=markup)
    with pytest.raises(BadRequest, match="Message is not modified: specified new message"):
        await bot.edit_message_text(
            "<b>x</b>", alice.id, sent.message_id, parse_mode="HTML", reply_markup=markup
        )
    # Same text without the keyboard is a change (the keyboard goes away).
    edited = await bot.edit_message_text("<b>x</b>", alice.id, sent.message_id, parse_mode="HTML")
    assert edited.reply_markup is None
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_reply_markup(alice.id, sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("y", alice.id, 9999)
    with pytest.raises(BadRequest, match="Message can't be edited"):
        await bot.edit_message_text("y", alice.id, 1)  # the user's /start
    await bot.edit_message_reply_markup(alice.id, sent.message_id, reply_markup=markup)
    assert alice.last_bot_message.buttons == [["A"]]
    assert alice.last_bot_message.edited


async def test_callback_query_answers(bot, emu, alice):
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Chọn", callback_data="pick")]])
    await bot.send_message(alice.id, "Chọn đi", reply_markup=markup)
    await alice.press("Chọn")
    (update,) = await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    query = update.callback_query
    assert query.data == "pick"
    assert query.message.text == "Chọn đi"
    assert query.from_user.id == alice.id
    assert await query.answer("ok")
    with pytest.raises(BadRequest, match="Query is too old and response timeout expired"):
        await query.answer("twice")
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query("123")


async def test_expired_callback_query(emu, bot, alice):
    emu.callback_query_ttl = 0.05
    await bot.send_message(
        alice.id,
        "x",
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]]),
    )
    await alice.press(callback_data="a")
    await asyncio.sleep(0.1)
    updates = await bot.get_updates(timeout=0)
    with pytest.raises(BadRequest, match="Query is too old"):
        await updates[-1].callback_query.answer()


async def test_forged_callback_data(bot, alice):
    await bot.send_message(alice.id, "x")
    await alice.press_data("admin:delete-all")
    updates = await bot.get_updates(timeout=0)
    assert updates[-1].callback_query.data == "admin:delete-all"


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


async def test_injected_429_raises_retry_after(bot, emu, alice, monkeypatch):
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    emu.fail_chat(alice.id, status=429, retry_after=1, times=2)
    for _ in range(2):
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(alice.id, "hi")
        assert caught.value.retry_after == dtm.timedelta(seconds=1)
    assert (await bot.send_message(alice.id, "now")).text == "now"
    assert [r.status for r in emu.rejections] == [429, 429]
    assert [d.method for d in emu.deliveries] == ["sendMessage"]


async def test_injected_429_body_is_telegrams(api, emu, alice):
    emu.fail_chat(alice.id, retry_after=7)
    response = await api.post("/sendMessage", json={"chat_id": alice.id, "text": "x"})
    assert response.status_code == 429
    assert response.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }


async def test_injected_403_until_cleared(bot, emu, alice):
    emu.fail_chat(alice.id, status=403, times=None)
    for _ in range(3):
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_document(alice.id, b"x", filename="x.txt")
    emu.clear_faults(alice.id)
    await bot.send_message(alice.id, "back")


async def test_blocked_user_gives_403(bot, emu, alice):
    await alice.block_bot()
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(alice.id, "hi")
    with pytest.raises(AssertionError, match="blocked the bot"):
        await alice.send("hello?")
    await alice.unblock_bot()
    await bot.send_message(alice.id, "hi again")


async def test_random_429_is_seeded_and_rate_limits(api, emu, alice):
    emu.set_random_429(0.5, retry_after=2)
    statuses = [
        (await api.post("/sendMessage", json={"chat_id": alice.id, "text": "x"})).status_code
        for _ in range(40)
    ]
    assert 5 < statuses.count(429) < 35
    emu.set_random_429(0)
    emu.set_rate_limits(per_chat=3, per_bot=None)
    statuses = [
        (await api.post("/sendMessage", json={"chat_id": alice.id, "text": "x"})).status_code
        for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    emu.set_rate_limits(None, None)


# ---------------------------------------------------------------------------------------------
# Commands, webhooks, chat actions
# ---------------------------------------------------------------------------------------------


async def test_commands_per_scope_and_language(bot, emu):
    member = [
        telegram.BotCommand("topic", "Chuyên đề năm nay"),
        telegram.BotCommand("pledge", "Cam kết"),
    ]
    leader = [telegram.BotCommand("summary", "Tổng hợp")]
    await bot.set_my_commands(member)
    await bot.set_my_commands(
        [telegram.BotCommand("topic", "This year's topic")], language_code="en"
    )
    await bot.set_my_commands(leader, scope=telegram.BotCommandScopeChat(1001))
    assert [c["command"] for c in emu.commands()] == ["topic", "pledge"]
    assert emu.commands(language_code="en")[0]["description"] == "This year's topic"
    assert emu.commands({"type": "chat", "chat_id": 1001}) == [
        {"command": "summary", "description": "Tổng hợp"}
    ]
    assert [c.command for c in await bot.get_my_commands()] == ["topic", "pledge"]
    emu.user(1001, "Lan")
    assert [c["command"] for c in emu.effective_commands(1001)] == ["summary"]
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([telegram.BotCommand("Bad-Name", "x")])


async def test_webhook_is_stored_and_blocks_polling(bot, emu):
    with pytest.raises(BadRequest, match=r"(?i)an https url must be provided"):
        await bot.set_webhook("http://example.org/hook")
    await bot.set_webhook("https://example.org/hook", secret_token="s3cr3t")
    info = await bot.get_webhook_info()
    assert info.url == "https://example.org/hook"
    assert emu.webhook["secret_token"] == "s3cr3t"
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()
    await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""


class _Target:
    """A local webhook receiver: records each POST, answers ``status`` after ``delay`` s."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        self.status = status
        self.delay = delay
        self.posts: list[dict] = []  # update, secret, start, end
        self.active = 0
        self.peak = 0

        async def receive(request):
            started = time.monotonic()
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.active -= 1
            self.posts.append(
                {
                    "update": json.loads(await request.body()),
                    "secret": request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                    "start": started,
                    "end": time.monotonic(),
                }
            )
            return Response(status_code=self.status)

        self.app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])

    async def __aenter__(self) -> _Target:
        import uvicorn

        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_config=None, lifespan="off", access_log=False)
        )
        self.server.capture_signals = contextlib.nullcontext  # the test keeps its handlers
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.server.should_exit = True
        await self.task

    def chats(self, chat_id: int) -> list[dict]:
        return [p for p in self.posts if p["update"]["message"]["chat"]["id"] == chat_id]


async def test_webhook_posts_updates_with_the_secret_header_once_routed(bot, emu):
    async with _Target() as target:
        await bot.set_webhook("https://bot.example.org/hook", secret_token="s3cr3t")
        lan = emu.user(1001, first_name="Lan")
        update_id = await lan.send("xin chào")
        await asyncio.sleep(0.1)
        assert target.posts == []  # stored, not called: nobody said where it goes
        assert (await bot.get_webhook_info()).pending_update_count == 1
        emu.route_webhook([target.url])
        await emu.wait_idle(timeout=5)
        [post] = target.posts
        assert post["secret"] == "s3cr3t"
        assert post["update"]["update_id"] == update_id
        assert post["update"]["message"]["text"] == "xin chào"
        assert (await bot.get_webhook_info()).pending_update_count == 0
        [attempt] = emu.webhook_attempts
        assert (attempt.update_id, attempt.target, attempt.status, attempt.ok) == (
            update_id,
            target.url,
            200,
            True,
        )
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates()


@pytest.mark.parametrize("max_connections", [1, 40])
async def test_webhook_keeps_each_chat_in_order_and_chats_side_by_side(bot, emu, max_connections):
    async with _Target(delay=0.1) as target:
        await bot.set_webhook("https://bot.example.org/hook", max_connections=max_connections)
        emu.route_webhook([target.url])
        people = [emu.user(1001 + i, first_name=f"U{i}") for i in range(3)]
        sent = {person.id: [await person.send(f"tin {n}") for n in range(3)] for person in people}
        await emu.wait_idle(timeout=10)
    for person in people:
        posts = target.chats(person.id)
        assert [p["update"]["update_id"] for p in posts] == sent[person.id]
        # The next update of a chat was posted only after the earlier one was answered.
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(posts))
    assert target.peak == (1 if max_connections == 1 else 3)


async def test_webhook_redelivers_to_the_next_target_and_reports_the_error(bot, emu):
    async with _Target(status=500) as broken, _Target() as healthy:
        await bot.set_webhook("https://bot.example.org/hook")
        emu.route_webhook([broken.url, healthy.url], retry_delay=0.05)
        lan, binh = emu.user(1001, first_name="Lan"), emu.user(1002, first_name="Bình")
        first = await lan.send("một")  # round-robin: to the broken target first
        second = await binh.send("hai")
        await emu.wait_idle(timeout=5)
        assert [p["update"]["update_id"] for p in broken.posts] == [first]
        assert sorted(p["update"]["update_id"] for p in healthy.posts) == [first, second]
        assert [(a.update_id, a.target, a.status) for a in emu.webhook_attempts][:1] == [
            (first, broken.url, 500)
        ]
        info = await bot.get_webhook_info()
        assert (
            info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        )
        assert info.pending_update_count == 0

        # Everything down: the update stays pending and keeps being retried.
        healthy.status = 503
        third = await lan.send("ba")
        await asyncio.sleep(0.4)
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 1
        assert len([a for a in emu.webhook_attempts if a.update_id == third]) >= 3
        healthy.status = broken.status = 200
        await emu.wait_idle(timeout=5)
        assert (await bot.get_webhook_info()).pending_update_count == 0


async def test_webhook_timeout_and_refused_connections_are_retried(bot, emu):
    async with _Target(delay=1.0) as slow, _Target() as healthy:
        await bot.set_webhook("https://bot.example.org/hook")
        emu.route_webhook([slow.url, healthy.url], retry_delay=0.0, timeout=0.2)
        update_id = await emu.user(1001, first_name="Lan").send("chậm")
        await emu.wait_idle(timeout=5)
        assert [(a.target, a.error) for a in emu.webhook_attempts] == [
            (slow.url, "Read timeout expired"),
            (healthy.url, None),
        ]
        dead = healthy.url
    emu.route_webhook([dead], retry_delay=0.05)
    await emu.user(1002, first_name="Bình").send("không ai nghe")
    await asyncio.sleep(0.3)
    info = await bot.get_webhook_info()
    assert (info.pending_update_count, info.last_error_message) == (1, "Connection refused")
    assert update_id not in [a.update_id for a in emu.webhook_attempts[2:]]


async def test_delete_webhook_stops_delivery_and_polling_gets_what_is_pending(bot, emu):
    async with _Target(status=500) as broken:
        await bot.set_webhook("https://bot.example.org/hook")
        emu.route_webhook([broken.url], retry_delay=0.05)
        update_id = await emu.user(1001, first_name="Lan").send("còn chờ")
        await asyncio.sleep(0.2)
        await bot.delete_webhook()
        posted = len(broken.posts)
        await asyncio.sleep(0.2)
        assert len(broken.posts) == posted
    [update] = await bot.get_updates()
    assert update.update_id == update_id


def test_route_webhook_refuses_what_it_cannot_post_to(emu):
    with pytest.raises(ValueError, match="not an http"):
        emu.route_webhook(["ftp://127.0.0.1/hook"])
    with pytest.raises(ValueError, match="retry_delay"):
        emu.route_webhook(["http://127.0.0.1:1/hook"], retry_delay=-1)


async def test_chat_action_and_delete(bot, emu, alice):
    assert await bot.send_chat_action(alice.id, "typing")
    sent = await bot.send_message(alice.id, "tạm")
    assert await bot.delete_message(alice.id, sent.message_id)
    assert all(m.message_id != sent.message_id for m in alice.transcript)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(alice.id, sent.message_id)


async def test_group_chat(bot, emu):
    lan = emu.user(6006, "Lan")
    minh = emu.user(6007, "Minh")
    group = emu.group(-100200, "Tổ 1", members=[lan])
    await lan.send("/help", chat=group)
    with pytest.raises(AssertionError, match="not a member"):
        await minh.send("/help", chat=group)
    (update,) = await bot.get_updates(timeout=0)
    assert update.effective_chat.type == "group"
    await bot.send_message(group.id, "Hãy nhắn riêng cho mình / message me privately")
    reply = await lan.next_reply(chat=group)
    assert reply.text.startswith("Hãy nhắn riêng")
    assert group.transcript[-1].from_bot


# ---------------------------------------------------------------------------------------------
# The sandbox page's endpoints
# ---------------------------------------------------------------------------------------------


async def test_sandbox_endpoints(bot, emu):
    emu.set_personas(
        [
            {
                "user_id": 7001,
                "name": "Nguyễn Thị Lan",
                "role": "member",
                "unit": "Tổ 1",
                "hint": "Đoàn viên mới",
                "phone": "+84912345678",
            }
        ]
    )
    lan = emu.user(7001)
    assert (lan.first_name, lan.last_name) == ("Lan", "Nguyễn Thị")
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        personas = (await client.get("/_sandbox/personas")).json()
        assert personas["personas"][0]["name"] == "Nguyễn Thị Lan"
        assert personas["bot"]["username"] == "chuyende_demo_bot"

        sent = await client.post("/_sandbox/send", json={"user_id": 7001, "text": "/start"})
        assert sent.json()["ok"]
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Tiếp ›", callback_data="n")]])
        message = await bot.send_message(
            7001, "<b>Chào</b> &lt;script&gt;", parse_mode="HTML", reply_markup=markup
        )

        page = (await client.get("/_sandbox/messages", params={"user_id": 7001, "after": 0})).json()
        events = page["events"]
        assert [e["message"]["from_bot"] for e in events] == [False, True]
        bot_message = events[1]["message"]
        assert bot_message["text"] == "Chào <script>"
        assert bot_message["entities"] == [{"type": "bold", "offset": 0, "length": 4}]
        assert bot_message["buttons"] == [[{"text": "Tiếp ›", "callback_data": "n"}]]

        # A long poll returns as soon as something happens.
        poll = asyncio.create_task(
            client.get("/_sandbox/messages", params={"user_id": 7001, "after": page["seq"]})
        )
        await asyncio.sleep(0.1)
        pressed = await client.post(
            "/_sandbox/press",
            json={"user_id": 7001, "message_id": message.message_id, "callback_data": "n"},
        )
        assert pressed.json()["ok"]
        updates = await bot.get_updates(timeout=0)
        await updates[-1].callback_query.answer("Đã chọn")
        answered = (await poll).json()
        assert answered["events"][0]["type"] == "answer"
        assert answered["events"][0]["answer"]["text"] == "Đã chọn"

        keyboard = telegram.ReplyKeyboardMarkup(
            [[KeyboardButton("📱 Số điện thoại", request_contact=True)]]
        )
        await bot.send_message(7001, "Số điện thoại?", reply_markup=keyboard)
        state = (await client.get("/_sandbox/messages", params={"user_id": 7001, "wait": 0})).json()
        assert state["reply_keyboard"] == [[{"text": "📱 Số điện thoại", "request_contact": True}]]
        contact = await client.post("/_sandbox/contact", json={"user_id": 7001})
        assert contact.json()["ok"]
        assert lan.transcript[-1].contact["phone_number"] == "+84912345678"

        unknown = await client.post("/_sandbox/send", json={"user_id": 1, "text": "x"})
        assert unknown.status_code == 404


async def test_sandbox_upload_sends_a_document_or_a_photo(bot, emu):
    """The page's 📎 button: an officer's roster arrives as a document, a picture as a photo."""
    emu.set_personas([{"user_id": 7002, "name": "Trần Văn An", "role": "officer", "unit": "X"}])
    an = emu.user(7002)
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        xlsx = b"PK\x03\x04 roster bytes"
        sent = await client.post(
            "/_sandbox/upload",
            json={
                "user_id": 7002,
                "filename": "danh-sach.xlsx",
                "mime_type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "data": base64.b64encode(xlsx).decode(),
            },
        )
        assert sent.json()["ok"]
        (update,) = await bot.get_updates(timeout=0)
        document = update.message.document
        assert document.file_name == "danh-sach.xlsx"
        assert bytes(await (await bot.get_file(document.file_id)).download_as_bytearray()) == xlsx
        photo = await client.post(
            "/_sandbox/upload",
            json={
                "user_id": 7002,
                "filename": "a.png",
                "mime_type": "image/png",
                "data": base64.b64encode(PNG_2X3).decode(),
            },
        )
        assert photo.json()["ok"]
        updates = await bot.get_updates(offset=update.update_id + 1, timeout=0)
        assert updates[-1].message.photo
        broken = await client.post(
            "/_sandbox/upload", json={"user_id": 7002, "filename": "x", "data": "!!not base64"}
        )
        assert broken.status_code == 400
        empty = await client.post("/_sandbox/upload", json={"user_id": 7002, "data": ""})
        assert empty.status_code == 400
    assert len(an.transcript) == 2  # the refused uploads reached nobody


async def test_page_is_served_with_the_emulator():
    async with BotApiEmulator(page=True) as emu, httpx.AsyncClient(base_url=emu.base_url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert 'id="persona-select"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = await client.get("/_sandbox/static/chat.js")
        assert script.status_code == 200
        assert "innerHTML" not in script.text


# ---------------------------------------------------------------------------------------------
# The HTML parser on its own
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        ("🏟 🏟&lt;<abacaba", "Unclosed start tag at byte offset 13"),
        ("🏟 🏟&lt;<abac aba>", 'Unsupported start tag "abac" at byte offset 13'),
        ("🏟 🏟&lt;<i   =aba>", 'Empty attribute name in the tag "i" at byte offset 13'),
        ("🏟 🏟&lt;<i    aba>", 'Can\'t find end tag corresponding to start tag "i"'),
        ("🏟 🏟&lt;<i    aba  =  ", 'Unclosed start tag "i" at byte offset 13'),
        ("🏟 🏟&lt;<i    aba  =  190azAz-.,", "Unexpected end of name token at byte offset 27"),
        ('🏟 🏟&lt;<i    aba  =  "&lt;&gt;&quot;>', "Unclosed start tag at byte offset 13"),
        ("🏟 🏟&lt;</", "Unexpected end tag at byte offset 13"),
        ("🏟 🏟&lt;<i>a</i   ", "Unclosed end tag at byte offset 17"),
        ("&#xDFDF;", "Text contains invalid Unicode characters"),
        ('<tg-emoji emoji-id="x">y</tg-emoji>', "Invalid custom emoji identifier specified"),
    ],
)
def test_parse_html_errors_match_tdlib(markup, error):
    with pytest.raises(HtmlParseError) as caught:
        parse_html(markup)
    assert str(caught.value).startswith(error)


def test_parse_html_entities_and_offsets():
    assert parse_html("🏟 🏟<i>🏟 &lt🏟</i>") == (
        "🏟 🏟🏟 <🏟",
        [{"type": "italic", "offset": 5, "length": 6}],
    )
    assert parse_html("<a>telegram.org</a>")[1] == [
        {"type": "text_link", "offset": 0, "length": 12, "url": "http://telegram.org/"}
    ]
    assert parse_html("x & y", strict=False) == ("x & y", [])
    assert parse_html("&ge;", strict=False) == ("&ge;", [])
    with pytest.raises(HtmlParseError):
        parse_html("&ge;")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escaped_text_round_trips(text):
    plain, entities = parse_html(html.escape(text))
    assert plain == text
    assert entities == []


@settings(max_examples=200, deadline=None)
@given(st.text(), st.sampled_from(["b", "i", "u", "s", "code", "tg-spoiler", "blockquote"]))
def test_wrapped_text_gets_one_entity(text, tag):
    plain, entities = parse_html(f"<{tag}>{html.escape(text)}</{tag}>")
    assert plain == text
    if text:
        assert len(entities) == 1
        assert entities[0]["offset"] == 0
        assert entities[0]["length"] == utf16_len(text)
    else:
        assert entities == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"<>/&;ab =\"'#x1", "<b>", "</b>", "&amp;"])).map("".join))
def test_parser_only_raises_its_own_error(markup):
    with contextlib.suppress(HtmlParseError):
        parse_html(markup)


# ---------------------------------------------------------------------------------------------
# Details the bot's own tests will lean on
# ---------------------------------------------------------------------------------------------


async def test_deep_link_payload_must_be_valid(emu):
    lan = emu.user(8008, "Lan")
    with pytest.raises(AssertionError, match="deep-link payload"):
        await lan.start("mã mời")
    with pytest.raises(AssertionError, match="deep-link payload"):
        await lan.start("x" * 65)
    assert await lan.start("A-b_9" * 12)


async def test_press_on_a_given_message_and_redelivery_reaches_the_app(emu, echo_app):
    lan = emu.user(8009, "Lan")
    await lan.send("một")
    first = await lan.next_reply()
    await lan.send("hai")
    await lan.next_reply()
    # Both messages have a "Tiếp ›" button; press the older one.
    update_id = await lan.press("Tiếp ›", message=first)
    edited = await lan.next_reply()
    assert edited.message_id == first.message_id
    assert edited.text.endswith("next:3")

    # Telegram retrying an update: the app sees the same update_id again.
    await emu.wait_idle(confirmed=True)
    emu.redeliver(update_id)
    await emu.wait_idle()
    with pytest.raises(AssertionError):
        await lan.next_reply(timeout=0.5)
    # The echo app is not idempotent: answering the same callback query twice is refused,
    # which is exactly what a redelivery test of the real bot should catch.
    assert emu.stats["answerCallbackQuery"] == 2
    assert emu.stats["editMessageText"] == 1


async def test_page_mounts_on_another_app():
    from starlette.applications import Starlette

    from bot.channels import sandbox_page

    app = Starlette()
    sandbox_page.mount(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert 'id="send-button"' in page.text
        assert (await client.get("/_sandbox/static/chat.css")).status_code == 200
