"""A local emulator of the part of the Telegram Bot API this bot uses.

The emulator is a real HTTP server (Starlette served by uvicorn, in-process) with Telegram's
URL layout, so python-telegram-bot talks to it unchanged::

    emu = BotApiEmulator()
    await emu.start()
    app = (
        ApplicationBuilder()
        .token(emu.token)
        .base_url(emu.api_base_url)          # f"{emu.base_url}/bot"
        .base_file_url(emu.file_base_url)    # f"{emu.base_url}/file/bot"
        .build()
    )

It is as strict as Telegram where the bot could get something wrong (message length counted in
UTF-16 code units after entity parsing, Telegram's HTML subset, ``callback_data`` of at most 64
bytes, unknown chats, "message is not modified", expired callback queries) and answers with
Telegram's own error descriptions, so PTB raises the same exceptions it would raise in
production. Faults (429 with ``retry_after``, 403 for a blocked bot) can be injected per chat.

Tests drive emulated people through the in-process client API (``emu.user(...)`` returns an
:class:`EmulatedUser` that can send text, press inline buttons, share a contact, block the
bot...). The web chat page (``page=True``) uses the JSON endpoints under ``/_sandbox/``.

Known simplifications (documented so nobody relies on them): one bot per emulator; no inline
mode, payments, media groups, forum topics or channels; MarkdownV2 is not parsed (the bot uses
HTML). One deliberate extra strictness: a bare ``&`` in HTML text that is not one of
Telegram's entities is an error here (Telegram would keep it literally), because it almost
always means user text was not escaped; pass ``strict_html=False`` to get Telegram's lenient
behaviour.

Webhooks: after ``setWebhook`` the emulator POSTs updates like Telegram does (JSON body, the
``X-Telegram-Bot-Api-Secret-Token`` header) once :meth:`BotApiEmulator.route_webhook` has
said which local http URLs stand for the registered https URL; until then a webhook is only
stored (and getUpdates answers 409). Delivery is round-robin across the targets, at most
``max_connections`` at a time, one chat's updates in order (the next waits for the earlier
one's 2xx); an update that got no 2xx (other status, refused, timed out) is delivered again
after ``retry_delay`` to the next target. ``webhook_attempts`` records every POST.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import html
import itertools
import json
import logging
import math
import mimetypes
import random
import re
import secrets
import struct
import time
import urllib.parse
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.tcp import bind_tcp

__all__ = [
    "MESSAGE_TEXT_LIMIT",
    "BotApiEmulator",
    "Delivery",
    "EmulatedGroup",
    "EmulatedMessage",
    "EmulatedUser",
    "HtmlParseError",
    "Rejection",
    "WebhookAttempt",
    "make_png",
    "parse_html",
    "utf16_len",
]

log = logging.getLogger(__name__)

MESSAGE_TEXT_LIMIT = 4096
_DEEP_LINK_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_TEXT_LIMIT = 200
DOCUMENT_UPLOAD_LIMIT = 50 * 1024 * 1024
PHOTO_UPLOAD_LIMIT = 10 * 1024 * 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024

# ---------------------------------------------------------------------------------------------
# Telegram's HTML parse mode
# ---------------------------------------------------------------------------------------------

#: TDLib's ``is_space``; NUL stands for the end of the C string.
_SPACE = frozenset(" \t\r\n\v\0")
_ATTRIBUTE_NAME_STOP = _SPACE | frozenset("=>/\"'")
_SUPPORTED_TAGS = frozenset(
    {
        "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler",
        "tg-emoji", "span", "pre", "code", "blockquote",
    }
)  # fmt: skip
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SIMPLE_TAG_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler",
}  # fmt: skip
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class HtmlParseError(ValueError):
    """The text is not valid in Telegram's HTML parse mode (the message after the prefix)."""


# Telegram bots may download files of up to 20 MB.
SANDBOX_UPLOAD_LIMIT = 20 * 1024 * 1024


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units: how Telegram measures text and offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _decode_char_ref(text: str, start: int) -> tuple[int, int] | None:
    """Decode the character reference at ``text[start] == "&"`` like TDLib does.

    Returns ``(code point, index after it)`` or ``None`` when the text stays literal. Only
    ``&lt; &gt; &amp; &quot;`` and numeric references exist; the ``;`` is optional.
    """
    n = len(text)
    end = start + 1
    if end < n and text[end] == "#":
        end += 1
        code_point = 0
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF":
                code_point = code_point * 16 + int(text[end], 16)
                end += 1
        else:
            while end < n and text[end] in "0123456789":
                code_point = code_point * 10 + int(text[end])
                end += 1
        if code_point == 0 or code_point >= 0x10FFFF or end - start >= 10:
            return None
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_REFERENCES.get(text[start + 1 : end])
        if named is None:
            return None
        code_point = ord(named)
    if end < n and text[end] == ";":
        end += 1
    return code_point, end


def _checked_link(url: str) -> str | None:
    """A rough version of TDLib's ``check_url``: the URL Telegram would keep, or ``None``."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("tg", "ton"):
            return url
        if scheme not in ("http", "https", "ftp"):
            return None
    else:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc:
        return None
    if not parts.path:
        url = urllib.parse.urlunsplit(parts._replace(path="/"))
    return url


def _tag_argument(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        return value
    if tag == "code" and attribute == "class" and value.startswith("language-"):
        return value[len("language-") :]
    if tag == "span" and attribute == "class" and value.startswith("tg-"):
        return value[len("tg-") :]
    if tag == "tg-emoji" and attribute == "emoji-id":
        return value
    if tag == "blockquote" and attribute == "expandable":
        return "1"
    return None


def parse_html(text: str, *, strict: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram's HTML parse mode into ``(plain text, entities)``.

    A port of TDLib's ``parse_html`` (what the Bot API server runs): same accepted tags, same
    character references, same error messages (raised as :class:`HtmlParseError`; the Bot API
    prefixes them with ``"Bad Request: can't parse entities: "``). Entity offsets and lengths
    are in UTF-16 code units. With ``strict`` (the default) a bare ``&`` is an error too.
    """
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    def byte_offset(k: int) -> int:
        return len(text[:k].encode("utf-8", "surrogatepass"))

    out: list[str] = []
    utf16 = 0
    # Open tags: [name, argument, utf16 offset, len(out) at the start]
    open_tags: list[tuple[str, str, int, int]] = []
    # Found entities, with a private "language" for <code> until a <pre> claims it.
    found: list[tuple[dict[str, Any], str]] = []
    decoded_surrogate = False
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            ref = _decode_char_ref(text, i)
            if ref is not None:
                code_point, i = ref
                if 0xD800 <= code_point <= 0xDFFF:
                    decoded_surrogate = True
                out.append(chr(code_point))
                utf16 += 2 if code_point > 0xFFFF else 1
                continue
            if strict:
                raise HtmlParseError(
                    f'Unsupported HTML entity at byte offset {byte_offset(i)} (write a literal "&" '
                    'as "&amp;"; the emulator is stricter than Telegram here)'
                )
        if c != "<":
            out.append(c)
            utf16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != "/":
            # A start tag.
            while at(i) not in _SPACE and at(i) != ">":
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
            tag = _ascii_lower(text[begin + 1 : i])
            if tag not in _SUPPORTED_TAGS:
                raise HtmlParseError(
                    f'Unsupported start tag "{tag}" at byte offset {byte_offset(begin)}'
                )
            argument = ""
            while at(i) != ">":
                while i < n and at(i) in _SPACE:
                    i += 1
                if at(i) == ">":
                    break
                attribute_begin = i
                while at(i) not in _ATTRIBUTE_NAME_STOP:
                    i += 1
                attribute = text[attribute_begin:i]
                if not attribute:
                    raise HtmlParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset '
                        f"{byte_offset(begin)}"
                    )
                while i < n and at(i) in _SPACE:
                    i += 1
                if at(i) != "=":
                    if i >= n:
                        raise HtmlParseError(
                            f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}'
                        )
                    if tag == "blockquote" and attribute == "expandable":
                        argument = "1"
                    continue
                i += 1
                while i < n and at(i) in _SPACE:
                    i += 1
                if i >= n:
                    raise HtmlParseError(
                        f'Unclosed start tag "{tag}" at byte offset {byte_offset(begin)}'
                    )
                if at(i) not in "'\"":
                    # A name token: letters, digits, periods or hyphens, case-insensitive.
                    token_begin = i
                    while at(i).isascii() and (at(i).isalnum() or at(i) in ".-"):
                        i += 1
                    value = _ascii_lower(text[token_begin:i])
                    if at(i) not in _SPACE and at(i) != ">":
                        position = byte_offset(token_begin)
                        raise HtmlParseError(
                            f"Unexpected end of name token at byte offset {position}"
                        )
                else:
                    quote = text[i]
                    i += 1
                    value_chars: list[str] = []
                    while i < n and text[i] != quote:
                        if text[i] == "&":
                            ref = _decode_char_ref(text, i)
                            if ref is not None:
                                value_chars.append(chr(ref[0]))
                                i = ref[1]
                                continue
                        value_chars.append(text[i])
                        i += 1
                    if i < n:
                        i += 1
                    value = "".join(value_chars)
                if i >= n:
                    raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset(begin)}")
                tag_argument = _tag_argument(tag, attribute, value)
                if tag_argument is not None:
                    argument = tag_argument
            if tag == "span" and argument != "spoiler":
                raise HtmlParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset(begin)}'
                )
            open_tags.append((tag, argument, utf16, len(out)))
            i += 1  # the ">"
            continue

        # An end tag.
        if not open_tags:
            raise HtmlParseError(f"Unexpected end tag at byte offset {byte_offset(begin)}")
        while at(i) not in _SPACE and at(i) != ">":
            i += 1
        end_tag = _ascii_lower(text[begin + 2 : i])
        while i < n and at(i) in _SPACE:
            i += 1
        if at(i) != ">":
            raise HtmlParseError(f"Unclosed end tag at byte offset {byte_offset(begin)}")
        tag, argument, offset, out_begin = open_tags[-1]
        if end_tag and end_tag != tag:
            raise HtmlParseError(
                f'Unmatched end tag at byte offset {byte_offset(begin)}, expected "</{tag}>", '
                f'found "</{end_tag}>"'
            )
        if utf16 > offset:
            _close_tag(tag, argument, offset, utf16 - offset, "".join(out[out_begin:]), found)
        open_tags.pop()
        i += 1  # the ">"

    if open_tags:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    if decoded_surrogate:
        raise HtmlParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, check for "
            "unmatched surrogate code units"
        )
    entities = [entity for entity, _ in found]
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _close_tag(
    tag: str,
    argument: str,
    offset: int,
    length: int,
    inner_text: str,
    found: list[tuple[dict[str, Any], str]],
) -> None:
    previous = found[-1] if found else None
    same_span = (
        previous is not None and previous[0]["offset"] == offset and previous[0]["length"] == length
    )
    if tag in _SIMPLE_TAG_TYPES:
        found.append(({"type": _SIMPLE_TAG_TYPES[tag], "offset": offset, "length": length}, ""))
    elif tag == "tg-emoji":
        if not re.fullmatch(r"[0-9]{1,19}", argument) or not 0 < int(argument) < 2**63:
            raise HtmlParseError("Invalid custom emoji identifier specified")
        found.append(
            (
                {
                    "type": "custom_emoji",
                    "offset": offset,
                    "length": length,
                    "custom_emoji_id": argument,
                },
                "",
            )
        )
    elif tag == "a":
        url = argument or inner_text
        user = re.fullmatch(r"tg://user\?id=([0-9]{1,19})", url)
        if user:
            found.append(
                (
                    {
                        "type": "text_mention",
                        "offset": offset,
                        "length": length,
                        "user": {"id": int(user.group(1)), "is_bot": False, "first_name": ""},
                    },
                    "",
                )
            )
            return
        checked = _checked_link(url)
        if checked is not None:
            found.append(
                ({"type": "text_link", "offset": offset, "length": length, "url": checked}, "")
            )
    elif tag == "pre":
        if same_span and previous is not None and previous[0]["type"] == "code" and previous[1]:
            found[-1] = (
                {"type": "pre", "offset": offset, "length": length, "language": previous[1]},
                "",
            )
        else:
            found.append(({"type": "pre", "offset": offset, "length": length}, ""))
    elif tag == "code":
        if (
            same_span
            and previous is not None
            and previous[0]["type"] == "pre"
            and "language" not in previous[0]
            and argument
        ):
            found[-1] = (
                {"type": "pre", "offset": offset, "length": length, "language": argument},
                "",
            )
        else:
            found.append(({"type": "code", "offset": offset, "length": length}, argument))
    elif tag == "blockquote":
        kind = "expandable_blockquote" if argument else "blockquote"
        found.append(({"type": kind, "offset": offset, "length": length}, ""))


def _trim_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip leading/trailing whitespace like Telegram and move the entities with the text."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    trimmed: list[dict[str, Any]] = []
    for entity in entities:
        start = max(0, entity["offset"] - shift)
        end = min(size, entity["offset"] + entity["length"] - shift)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return stripped, trimmed


# ---------------------------------------------------------------------------------------------
# Errors and small helpers
# ---------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """An error answer of the Bot API: ``{"ok": false, "error_code": ..., ...}``."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


def _too_many_requests(retry_after: int) -> _ApiError:
    return _ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    return None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _json_param(value: Any, error: str) -> Any:
    """Parameters that are objects arrive as JSON strings in form and multipart bodies."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise _bad(error) from exc
    return value


@dataclass
class _Upload:
    filename: str
    content_type: str
    data: bytes


_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, _Upload]]:
    """Parse a multipart/form-data body (what PTB sends when it uploads a file)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise _bad("can't parse multipart/form-data request: no boundary")
    delimiter = b"\r\n--" + match.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, _Upload] = {}
    for chunk in (b"\r\n" + body).split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            continue
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params: dict[str, str] = {}
        for key, quoted, bare in _DISPOSITION_PARAM.findall(
            ";" + headers.get("content-disposition", "").partition(";")[2]
        ):
            value = quoted if quoted or not bare else bare
            value = re.sub(r"\\(.)", r"\1", value).replace("%22", '"')
            if key.lower() == "filename*" and "''" in value:
                value = urllib.parse.unquote(value.split("''", 1)[1])
                key = "filename"
            params[key.lower()] = value
        name = params.get("name")
        if name is None:
            continue
        if "filename" in params:
            files[name] = _Upload(
                filename=params["filename"],
                content_type=headers.get("content-type", "application/octet-stream"),
                data=data,
            )
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _image_mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"GIF8":
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG/JPEG/GIF/WebP/BMP image, or None if it is not an image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 512, 512
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (segment_length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + segment_length
        return 512, 512
    return None


# ---------------------------------------------------------------------------------------------
# What tests look at
# ---------------------------------------------------------------------------------------------


@dataclass
class EmulatedMessage:
    """One message of an emulated chat, as the person in it sees it.

    ``text`` is the plain text after parsing HTML (what the user reads; the caption for a
    document or photo); ``html`` is the raw text the bot sent (user messages: their text,
    HTML-escaped). A snapshot: an edit produces a new object with ``edited=True``.
    """

    message_id: int
    chat_id: int
    from_bot: bool
    sender_id: int
    text: str
    html: str
    date: int
    kind: str = "text"  # text | document | photo | contact | sticker
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_markup: dict[str, Any] | None = None
    edited: bool = False
    document: bytes | None = None
    document_name: str | None = None
    photo: bytes | None = None
    file_id: str | None = None
    contact: dict[str, Any] | None = None
    reply_to_message_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    seq: int = 0

    @property
    def inline_keyboard(self) -> list[list[dict[str, Any]]]:
        markup = self.reply_markup or {}
        return markup.get("inline_keyboard") or []

    @property
    def buttons(self) -> list[list[str]]:
        """Texts of the inline keyboard buttons, row by row."""
        return [[button["text"] for button in row] for row in self.inline_keyboard]

    @property
    def keyboard(self) -> list[list[str]]:
        """Texts of the reply keyboard sent with this message, row by row."""
        rows = (self.reply_markup or {}).get("keyboard") or []
        return [[button["text"] for button in row] for row in rows]

    @property
    def requests_contact(self) -> bool:
        """Whether this message shows a reply keyboard button that shares the phone number."""
        rows = (self.reply_markup or {}).get("keyboard") or []
        return any(button.get("request_contact") for row in rows for button in row)

    def button(self, text: str) -> dict[str, Any] | None:
        """The inline button with exactly this text, or None."""
        for row in self.inline_keyboard:
            for button in row:
                if button["text"] == text:
                    return button
        return None

    def callback_data(self, text: str) -> str:
        button = self.button(text)
        if button is None or "callback_data" not in button:
            raise AssertionError(f"no callback button {text!r} in message {self.message_id}")
        return button["callback_data"]

    def describe(self) -> str:
        who = "bot" if self.from_bot else "user"
        mark = " (edited)" if self.edited else ""
        lines = [f"[{self.message_id}] {who}{mark}: {self.text}"]
        if self.kind in ("document", "photo"):
            lines.append(f"    <{self.kind} {self.document_name or ''}>")
        if self.buttons:
            lines.append(f"    buttons: {self.buttons}")
        if self.keyboard:
            lines.append(f"    keyboard: {self.keyboard}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Delivery:
    """A message-producing request the emulator accepted (send* or edit*)."""

    seq: int
    method: str
    chat_id: int
    message_id: int | None
    monotonic: float
    wall: float


@dataclass(frozen=True)
class Rejection:
    """A send the emulator refused with an injected or simulated fault (429, 403, ...)."""

    method: str
    chat_id: int
    status: int
    description: str
    monotonic: float


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of an update to a webhook target, and how it ended."""

    update_id: int
    target: str
    status: int | None  # None: no HTTP answer (refused, timed out)
    error: str | None  # Telegram's last_error_message wording; None on success
    started: float  # time.monotonic()
    finished: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Event:
    seq: int
    kind: str  # message | edit | delete | answer
    message: EmulatedMessage | None = None
    message_id: int | None = None
    answer: dict[str, Any] | None = None


@dataclass
class _Fault:
    status: int
    retry_after: int
    remaining: int | None
    methods: frozenset[str] | None
    description: str | None


@dataclass
class _Hold:
    released: asyncio.Event = field(default_factory=asyncio.Event)
    deliver: bool = True


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    data: bytes
    kind: str  # document | photo
    file_path: str
    file_name: str | None
    mime_type: str | None
    width: int = 0
    height: int = 0


@dataclass
class _QueuedUpdate:
    update: dict[str, Any]
    delivered: bool = False
    forced: bool = False  # a redelivery: delivered once regardless of the offset
    in_flight: bool = False  # webhook: a POST of it is under way
    not_before: float = 0.0  # webhook: loop time before which it is not posted again
    last_target: int | None = None  # webhook: the target of its previous attempt

    @property
    def update_id(self) -> int:
        return self.update["update_id"]

    @property
    def kind(self) -> str:
        return next(key for key in self.update if key != "update_id")


@dataclass
class _CallbackQuery:
    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    created: float
    answer: dict[str, Any] | None = None


class _Chat:
    def __init__(
        self,
        chat_id: int,
        chat_type: str,
        *,
        user: EmulatedUser | None = None,
        title: str | None = None,
        privacy: bool = True,
    ) -> None:
        self.id = chat_id
        self.type = chat_type
        self.user = user
        self.title = title
        self.privacy = privacy
        self.members: set[int] = set()
        self.known = chat_type != "private"
        self.instance = str(secrets.randbits(62))
        self.messages: dict[int, EmulatedMessage] = {}
        self.raw: dict[int, dict[str, Any]] = {}
        self.events: list[_Event] = []
        self.reply_keyboard: dict[str, Any] | None = None
        self.last_action: str | None = None
        self._next_message_id = 1

    def new_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    def to_json(self) -> dict[str, Any]:
        if self.type == "private":
            assert self.user is not None
            data: dict[str, Any] = {"id": self.id, "first_name": self.user.first_name}
            if self.user.last_name:
                data["last_name"] = self.user.last_name
            if self.user.username:
                data["username"] = self.user.username
            data["type"] = "private"
            return data
        return {"id": self.id, "title": self.title or "", "type": self.type}


# ---------------------------------------------------------------------------------------------
# Emulated people
# ---------------------------------------------------------------------------------------------


class EmulatedUser:
    """A person using Telegram, talking to the emulated bot. Create with ``emu.user(...)``."""

    def __init__(
        self,
        emulator: BotApiEmulator,
        user_id: int,
        first_name: str,
        last_name: str | None,
        username: str | None,
        language_code: str | None,
        phone: str | None,
    ) -> None:
        self.emulator = emulator
        self.id = user_id
        self.first_name = first_name
        self.last_name = last_name
        self.username = username
        self.language_code = language_code
        self.phone = phone
        self.blocked = False
        self.callback_answers: list[dict[str, Any]] = []
        self._cursors: dict[int, int] = {}
        self._last_query_id: str | None = None

    def __repr__(self) -> str:
        return f"EmulatedUser({self.id}, {self.first_name!r})"

    # -- identity --------------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data

    @property
    def chat_id(self) -> int:
        """The private chat with the bot has the user's id, as in Telegram."""
        return self.id

    # -- acting ----------------------------------------------------------------------------

    async def send(
        self,
        text: str,
        *,
        chat: EmulatedGroup | int | None = None,
        reply_to: EmulatedMessage | int | None = None,
    ) -> int | None:
        """Send a text message; returns the update_id (None if the bot cannot see it).

        Commands get ``bot_command`` entities like Telegram gives them. In a group with privacy
        mode (the default) the bot only receives commands, mentions and replies to it.
        """
        return await self.emulator._user_text(self, text, chat, reply_to)

    async def start(self, code: str | None = None) -> int | None:
        """Press Start, or open a deep link ``t.me/<bot>?start=<code>``.

        Telegram only passes deep-link payloads of 1-64 characters ``A-Z a-z 0-9 _ -``; other
        codes never reach the bot, so they are refused here too.
        """
        if code is not None and not _DEEP_LINK_PAYLOAD.fullmatch(code):
            raise AssertionError(
                f"{code!r} is not a valid deep-link payload (1-64 of A-Z a-z 0-9 _ -)"
            )
        return await self.send(f"/start {code}" if code else "/start")

    async def press(
        self,
        text: str | None = None,
        *,
        callback_data: str | None = None,
        message: EmulatedMessage | int | None = None,
        chat: EmulatedGroup | int | None = None,
    ) -> int:
        """Press an inline button (by its text, or its callback_data) of the latest bot message
        that has it (or of ``message``). Returns the update_id of the callback query."""
        return await self.emulator._press_button(self, text, callback_data, message, chat)

    async def press_data(
        self,
        data: str,
        *,
        message_id: int | None = None,
        chat: EmulatedGroup | int | None = None,
    ) -> int:
        """Send a callback query with any data (a forged button), attached to ``message_id``
        (default: the latest bot message in the chat)."""
        return await self.emulator._press_forged(self, data, message_id, chat)

    async def share_contact(
        self,
        phone: str | None = None,
        *,
        user_id: int | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> int:
        """Share a contact. By default the user's own (what a ``request_contact`` button sends:
        ``contact.user_id`` equals the sender). Pass ``user_id`` to share someone else's."""
        return await self.emulator._share_contact(self, phone, user_id, first_name, last_name)

    async def send_sticker(self, emoji: str = "👍") -> int:
        return await self.emulator._user_media(self, "sticker", emoji=emoji)

    async def send_photo(self, data: bytes | None = None, caption: str | None = None) -> int:
        return await self.emulator._user_media(self, "photo", data=data, caption=caption)

    async def send_document(
        self, data: bytes, filename: str, caption: str | None = None, mime_type: str | None = None
    ) -> int:
        """Send a file (a document message); the bot can fetch it with getFile."""
        return await self.emulator._user_media(
            self, "document", data=data, caption=caption, filename=filename, mime_type=mime_type
        )

    async def block_bot(self) -> int:
        """Block the bot: a ``my_chat_member`` update (member -> kicked); sends now get 403."""
        return await self.emulator._set_blocked(self, True)

    async def unblock_bot(self) -> int:
        return await self.emulator._set_blocked(self, False)

    # -- reading ---------------------------------------------------------------------------

    def _chat(self, chat: EmulatedGroup | int | None) -> _Chat:
        return self.emulator._chat_for(self, chat)

    @property
    def transcript(self) -> list[EmulatedMessage]:
        """Every message of the private chat with the bot (both directions), oldest first."""
        return list(self._chat(None).messages.values())

    def transcript_text(self, chat: EmulatedGroup | int | None = None) -> str:
        messages = self._chat(chat).messages.values()
        return "\n".join(message.describe() for message in messages) or "(no messages)"

    @property
    def bot_messages(self) -> list[EmulatedMessage]:
        return [message for message in self.transcript if message.from_bot]

    @property
    def last_bot_message(self) -> EmulatedMessage | None:
        messages = self.bot_messages
        return messages[-1] if messages else None

    @property
    def reply_keyboard(self) -> list[list[str]]:
        """The reply keyboard the bot currently shows in the private chat (texts)."""
        markup = self._chat(None).reply_keyboard or {}
        return [[button["text"] for button in row] for row in markup.get("keyboard", [])]

    @property
    def contact_requested(self) -> bool:
        markup = self._chat(None).reply_keyboard or {}
        return any(b.get("request_contact") for row in markup.get("keyboard", []) for b in row)

    def _unseen(self, chat: _Chat) -> list[tuple[int, _Event]]:
        """Bot messages (new or edited) after this user's next_reply cursor, with positions."""
        start = self._cursors.get(chat.id, 0)
        return [
            (position, event)
            for position, event in enumerate(chat.events[start:], start)
            if event.kind in ("message", "edit")
            and event.message is not None
            and event.message.from_bot
        ]

    async def next_reply(
        self, timeout: float = 5.0, *, chat: EmulatedGroup | int | None = None
    ) -> EmulatedMessage:
        """The next bot message (new or edited) not returned by next_reply yet."""
        target = self._chat(chat)
        ready = await self.emulator._wait_until(lambda: bool(self._unseen(target)), timeout)
        if not ready:
            raise AssertionError(
                f"{self!r}: no reply from the bot within {timeout} s. Transcript:\n"
                + self.transcript_text(chat)
            )
        position, event = self._unseen(target)[0]
        self._cursors[target.id] = position + 1
        assert event.message is not None
        return event.message

    async def replies_until_idle(
        self,
        idle: float = 0.3,
        timeout: float = 5.0,
        *,
        chat: EmulatedGroup | int | None = None,
    ) -> list[EmulatedMessage]:
        """Collect bot messages (new or edited) until the bot has fetched every update and
        then stayed quiet for ``idle`` seconds (or ``timeout`` passed)."""
        target = self._chat(chat)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.emulator.wait_idle(timeout=timeout)
        collected: list[EmulatedMessage] = []
        while True:
            for position, event in self._unseen(target):
                assert event.message is not None
                collected.append(event.message)
                self._cursors[target.id] = position + 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                return collected
            got = await self.emulator._wait_until(
                lambda: bool(self._unseen(target)), min(idle, remaining)
            )
            if not got:
                return collected

    async def wait_callback_answer(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the bot answered the latest button press; returns the answer's params."""
        query_id = self._last_query_id
        if query_id is None:
            raise AssertionError("no button was pressed")
        query = self.emulator._callback_queries[query_id]
        if not await self.emulator._wait_until(lambda: query.answer is not None, timeout):
            raise AssertionError(f"the bot did not answer callback query {query_id}")
        assert query.answer is not None
        return query.answer


class EmulatedGroup:
    """A group chat the bot is in. Create with ``emu.group(chat_id, title)``."""

    def __init__(self, emulator: BotApiEmulator, chat: _Chat) -> None:
        self.emulator = emulator
        self._chat = chat

    @property
    def id(self) -> int:
        return self._chat.id

    @property
    def title(self) -> str:
        return self._chat.title or ""

    def add(self, *users: EmulatedUser) -> EmulatedGroup:
        for user in users:
            self._chat.members.add(user.id)
        return self

    @property
    def members(self) -> set[int]:
        return set(self._chat.members)

    @property
    def transcript(self) -> list[EmulatedMessage]:
        return list(self._chat.messages.values())


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------

_DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
        "upload_document", "choose_sticker", "find_location", "record_video_note",
        "upload_video_note",
    }
)  # fmt: skip
_INLINE_BUTTON_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
)  # fmt: skip
_COMMAND_SCOPES = frozenset(
    {
        "default", "all_private_chats", "all_group_chats", "all_chat_administrators", "chat",
        "chat_administrators", "chat_member",
    }
)  # fmt: skip


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers (the emulator lives inside someone else's process)
    and with a main loop that notices ``stop()`` at once instead of on its next 0.1 s tick."""

    wake: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        self.wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)


class BotApiEmulator:
    """One emulated bot on a local Telegram Bot API server. See the module docstring."""

    def __init__(
        self,
        token: str = "123456:TEST",
        bot_username: str = "chuyende_demo_bot",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bot_first_name: str = "Chuyên đề",
        page: bool = False,
        strict_html: bool = True,
        callback_query_ttl: float = 15.0,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.token = token
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 123456
        self.host = host
        self.port = port
        self.strict_html = strict_html
        self.callback_query_ttl = callback_query_ttl
        self.clock = clock

        #: Requests per Bot API method (canonical names, e.g. "sendMessage").
        self.stats: Counter[str] = Counter()
        #: Accepted message-producing requests in order (send*, edit*), with timestamps.
        self.deliveries: list[Delivery] = []
        #: Sends refused with a fault (injected 429/403, blocked bot, rate limit).
        self.rejections: list[Rejection] = []
        self.personas: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        #: Every webhook POST, in the order they ended.
        self.webhook_attempts: list[WebhookAttempt] = []

        self._users: dict[int, EmulatedUser] = {}
        self._chats: dict[int, _Chat] = {}
        self._queue: list[_QueuedUpdate] = []
        self._updates_by_id: dict[int, dict[str, Any]] = {}
        self._next_update_id = itertools.count(secrets.randbelow(10**8) + 10**8)
        self._confirmed_below = 0
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._seq = 0
        self._changed = asyncio.Event()
        self._closing = False
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._file_counter = itertools.count(1)
        self._commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._callback_queries: dict[str, _CallbackQuery] = {}
        self._faults: dict[int, list[_Fault]] = {}
        self._random = random.Random(seed)
        self._random_429: tuple[float, int, frozenset[str] | None] | None = None
        self._updates_retry_after: int | None = None
        #: getUpdates calls answered with the 429 of `fail_updates`.
        self.updates_refused = 0
        self._rate_limits: tuple[int | None, int | None, float] | None = None
        self._recent_sends: deque[tuple[float, int]] = deque()

        self._server: _QuietServer | None = None
        self._server_task: asyncio.Task[None] | None = None

        self._webhook_targets: list[str] = []
        self._webhook_retry_delay = 0.5
        self._webhook_timeout = 10.0
        self._webhook_next_target = 0
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_posts: set[asyncio.Task[None]] = set()
        self._webhook_error: tuple[int, str] | None = None
        self._send_delay: tuple[float, frozenset[str] | None] | None = None
        self._held_chats: dict[int, _Hold] = {}
        #: The parameters of the send*/edit* requests waiting now in a chat held by
        #: `hold_sends`.
        self.held_sends: list[dict[str, Any]] = []

        self._methods: dict[str, tuple[str, Callable[..., Any]]] = {}
        for name in (
            "getMe", "getUpdates", "sendMessage", "editMessageText", "editMessageCaption",
            "editMessageReplyMarkup", "deleteMessage", "answerCallbackQuery", "setMyCommands",
            "getMyCommands", "deleteMyCommands", "deleteWebhook", "setWebhook", "getWebhookInfo",
            "sendDocument", "sendPhoto", "getFile", "sendChatAction",
        ):  # fmt: skip
            handler = getattr(self, "_api_" + re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())
            self._methods[name.lower()] = (name, handler)

        routes = [
            Route("/bot{token}/{method}", self._handle_api, methods=["GET", "POST"]),
            Route("/file/bot{token}/{file_path:path}", self._handle_file, methods=["GET"]),
            Route("/_sandbox/personas", self._sandbox_personas, methods=["GET"]),
            Route("/_sandbox/send", self._sandbox_send, methods=["POST"]),
            Route("/_sandbox/press", self._sandbox_press, methods=["POST"]),
            Route("/_sandbox/contact", self._sandbox_contact, methods=["POST"]),
            Route("/_sandbox/upload", self._sandbox_upload, methods=["POST"]),
            Route("/_sandbox/messages", self._sandbox_messages, methods=["GET"]),
            Route("/_sandbox/commands", self._sandbox_commands, methods=["GET"]),
            Route("/_sandbox/file/{file_id}", self._sandbox_file, methods=["GET"]),
        ]
        #: The ASGI app; serve it elsewhere if you like (``emu.start()`` serves it itself).
        self.app = Starlette(routes=routes)
        if page:
            from bot.channels import sandbox_page

            sandbox_page.mount(self.app)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base_url(self) -> str:
        """For PTB's ``base_url``: the token and method are appended to it."""
        return f"{self.base_url}/bot"

    @property
    def file_base_url(self) -> str:
        """For PTB's ``base_file_url``."""
        return f"{self.base_url}/file/bot"

    async def start(self) -> BotApiEmulator:
        """Bind the port (0 = a free one) and serve in the running event loop."""
        if self._server is not None:
            return self
        self._changed = asyncio.Event()
        self._closing = False
        sock = bind_tcp(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,  # request lines carry the bot token
            lifespan="off",
            http="h11",
            ws="none",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=3,
        )
        server = _QuietServer(config)
        self._server = server
        self._server_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._server_task.done():
                self._server = None
                sock.close()
                await self._server_task  # raises what went wrong
                raise RuntimeError("the emulator's server stopped while starting")
            await asyncio.sleep(0.005)
        log.info("Bot API emulator listening on %s:%s", self.host, self.port)
        self._ensure_webhook_delivery()
        return self

    async def stop(self) -> None:
        """Answer pending long polls and stop the server."""
        if self._server is None or self._server_task is None:
            return
        self._closing = True
        self._notify()
        self.release_sends()  # nothing waits on a hold past the server
        await self._stop_webhook_delivery()
        self._server.should_exit = True
        if self._server.wake is not None:
            self._server.wake.set()
        try:
            await self._server_task
        finally:
            self._server = None
            self._server_task = None

    async def __aenter__(self) -> BotApiEmulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start (if needed) and run until cancelled; for ``chuyende demo``."""
        await self.start()
        try:
            assert self._server_task is not None
            await asyncio.shield(self._server_task)
        finally:
            await self.stop()

    # -- change notification ---------------------------------------------------------------

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            if predicate():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- client API: people, chats, updates ------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "User",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "vi",
        *,
        phone: str | None = None,
        started: bool = False,
    ) -> EmulatedUser:
        """The emulated person with this id (created on first use; later calls return it).

        ``started=True``: they opened the chat with the bot before (say, when they joined
        months ago), so the bot may message them first, as Telegram allows.
        """
        existing = self._users.get(user_id)
        if existing is not None:
            if started:
                self._chats[user_id].known = True
            return existing
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user = EmulatedUser(self, user_id, first_name, last_name, username, language_code, phone)
        self._users[user_id] = user
        self._chats[user_id] = _Chat(user_id, "private", user=user)
        self._chats[user_id].known = started
        return user

    @property
    def users(self) -> list[EmulatedUser]:
        return list(self._users.values())

    def group(
        self,
        chat_id: int,
        title: str,
        *,
        members: Iterable[EmulatedUser] = (),
        privacy: bool = True,
        chat_type: str = "group",
    ) -> EmulatedGroup:
        """A group chat the bot is a member of (ids are negative, as in Telegram).

        ``privacy=True`` is Telegram's default privacy mode: the bot only receives commands,
        messages mentioning it and replies to its messages.
        """
        if chat_id >= 0:
            raise ValueError("group chat ids are negative")
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Chat(chat_id, chat_type, title=title, privacy=privacy)
            self._chats[chat_id] = chat
        group = EmulatedGroup(self, chat)
        group.add(*members)
        return group

    def push_update(self, update: dict[str, Any]) -> int:
        """Enqueue a raw update; an ``update_id`` is assigned if missing. Returns it."""
        update = dict(update)
        if "update_id" not in update:
            update = {"update_id": next(self._next_update_id), **update}
        self._queue.append(_QueuedUpdate(update))
        self._updates_by_id[update["update_id"]] = update
        self._notify()
        return update["update_id"]

    def redeliver(self, update_id: int) -> None:
        """Deliver an update again with the same update_id (Telegram retries after errors)."""
        update = self._updates_by_id.get(update_id)
        if update is None:
            raise KeyError(f"no update {update_id}")
        self._queue.append(_QueuedUpdate(copy.deepcopy(update), forced=True))
        self._notify()

    def pending_updates(self) -> int:
        return len(self._queue)

    async def wait_idle(self, timeout: float = 5.0, *, confirmed: bool = False) -> None:
        """Wait until the bot has fetched every pending update (``confirmed``: and confirmed
        them with a later offset). Raises AssertionError on timeout."""

        def idle() -> bool:
            if confirmed:
                return not self._queue
            return all(entry.delivered for entry in self._queue)

        if not await self._wait_until(idle, timeout):
            kinds = [entry.kind for entry in self._queue if not entry.delivered]
            raise AssertionError(
                f"the bot did not fetch its updates within {timeout} s (still pending: {kinds})"
            )

    def commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, str]]:
        """What setMyCommands stored for this scope (default scope) and language."""
        return list(self._commands.get((self._scope_key(scope), language_code), []))

    @property
    def all_commands(self) -> dict[tuple[str, str], list[dict[str, str]]]:
        """Every stored command list, keyed by (scope as JSON, language_code)."""
        return {key: list(value) for key, value in self._commands.items()}

    def effective_commands(self, user_id: int) -> list[dict[str, str]]:
        """The command menu a user sees in the private chat (Telegram's scope resolution)."""
        user = self._users.get(user_id)
        language = (user.language_code or "") if user else ""
        scopes = [
            {"type": "chat", "chat_id": user_id},
            {"type": "all_private_chats"},
            {"type": "default"},
        ]
        for scope in scopes:
            for lang in (language, "") if language else ("",):
                found = self._commands.get((self._scope_key(scope), lang))
                if found:
                    return list(found)
        return []

    def unanswered_callback_queries(self) -> list[str]:
        return [q.query_id for q in self._callback_queries.values() if q.answer is None]

    def set_personas(self, personas: list[dict[str, Any]]) -> None:
        """The demo people of the web chat page: ``{"user_id", "name", "role", "unit",
        "hint", "phone"}`` (optionally ``first_name``, ``last_name``, ``username``,
        ``language_code``, ``start``: an invite code for the page's Start button)."""
        self.personas = [dict(p) for p in personas]
        for persona in self.personas:
            name = str(persona.get("name") or f"User {persona['user_id']}")
            # Vietnamese names put the family name first; Telegram's first_name is the given one.
            parts = name.split()
            first = persona.get("first_name") or (parts[-1] if parts else name)
            last = persona.get("last_name") or (" ".join(parts[:-1]) or None)
            user = self.user(
                int(persona["user_id"]),
                first,
                last,
                persona.get("username"),
                persona.get("language_code", "vi"),
                phone=persona.get("phone"),
            )
            if persona.get("phone"):
                user.phone = persona["phone"]

    # -- client API: faults ----------------------------------------------------------------

    def fail_chat(
        self,
        chat_id: int,
        status: int = 429,
        retry_after: int = 1,
        times: int | None = 1,
        *,
        methods: Iterable[str] | None = None,
        description: str | None = None,
    ) -> None:
        """Make the next ``times`` send* calls to ``chat_id`` fail (None = until cleared).

        429 answers "Too Many Requests: retry after N" with ``parameters.retry_after``; 403
        answers "Forbidden: bot was blocked by the user"; other statuses use ``description``.
        ``methods`` narrows the methods that fail (default: every method named send*).
        """
        fault = _Fault(
            status=status,
            retry_after=retry_after,
            remaining=times,
            methods=frozenset(methods) if methods is not None else None,
            description=description,
        )
        self._faults.setdefault(chat_id, []).append(fault)

    def clear_faults(self, chat_id: int | None = None) -> None:
        """Remove the injected faults of one chat (or of all chats)."""
        if chat_id is None:
            self._faults.clear()
        else:
            self._faults.pop(chat_id, None)

    def set_random_429(
        self, ratio: float, retry_after: int = 1, *, methods: Iterable[str] | None = None
    ) -> None:
        """Answer a random share of send* calls with 429 (seeded RNG; ratio 0 turns it off)."""
        if ratio <= 0:
            self._random_429 = None
        else:
            allowed = frozenset(methods) if methods is not None else None
            self._random_429 = (ratio, retry_after, allowed)

    def fail_updates(self, retry_after: int | None) -> None:
        """Answer every getUpdates with 429 "retry after N" (None: answer normally again).

        Telegram's flood control on polling: PTB then waits N seconds before it polls again.
        """
        self._updates_retry_after = retry_after

    def set_rate_limits(
        self,
        per_chat: int | None = None,
        per_bot: int | None = 30,
        window: float = 1.0,
    ) -> None:
        """Enforce Telegram-like flood limits on send* (sliding window): more than
        ``per_bot`` sends in ``window`` seconds, or more than ``per_chat`` to one chat, get 429.
        Call with both None to turn it off."""
        if per_chat is None and per_bot is None:
            self._rate_limits = None
        else:
            self._rate_limits = (per_chat, per_bot, window)

    def _check_send_faults(self, method: str, chat: _Chat) -> None:
        error = self._send_fault(method, chat)
        if error is not None:
            self.rejections.append(
                Rejection(method, chat.id, error.code, error.description, time.monotonic())
            )
            raise error

    def _send_fault(self, method: str, chat: _Chat) -> _ApiError | None:
        is_send = method.startswith("send")
        for fault in self._faults.get(chat.id, []):
            applies = method in fault.methods if fault.methods is not None else is_send
            if not applies:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            self._faults[chat.id] = [
                f for f in self._faults[chat.id] if f.remaining is None or f.remaining > 0
            ]
            if fault.status == 429:
                return _too_many_requests(fault.retry_after)
            if fault.status == 403:
                return _ApiError(403, fault.description or "Forbidden: bot was blocked by the user")
            return _ApiError(fault.status, fault.description or f"Error {fault.status}")
        if not is_send:
            return None
        if chat.user is not None and chat.user.blocked:
            return _ApiError(403, "Forbidden: bot was blocked by the user")
        if self._random_429 is not None:
            ratio, retry_after, allowed = self._random_429
            if (allowed is None or method in allowed) and self._random.random() < ratio:
                return _too_many_requests(retry_after)
        if self._rate_limits is not None:
            per_chat, per_bot, window = self._rate_limits
            now = time.monotonic()
            while self._recent_sends and self._recent_sends[0][0] <= now - window:
                self._recent_sends.popleft()
            if per_bot is not None and len(self._recent_sends) >= per_bot:
                wait = self._recent_sends[-per_bot][0] + window - now
                return _too_many_requests(max(1, math.ceil(wait)))
            if per_chat is not None:
                in_chat = [t for t, cid in self._recent_sends if cid == chat.id]
                if len(in_chat) >= per_chat:
                    wait = in_chat[-per_chat] + window - now
                    return _too_many_requests(max(1, math.ceil(wait)))
            self._recent_sends.append((now, chat.id))
        return None

    # -- HTTP: the Bot API -----------------------------------------------------------------

    async def _handle_api(self, request: Request) -> Response:
        token = request.path_params["token"]
        method = request.path_params["method"]
        if token != self.token:
            return JSONResponse(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401
            )
        known = self._methods.get(method.lower())
        self.stats[known[0] if known else method] += 1
        if known is None:
            return JSONResponse(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404
            )
        name, handler = known
        try:
            params, files = await self._read_params(request)
            if self._send_delay is not None:
                delay, methods = self._send_delay
                if (methods is None and name.startswith(("send", "edit"))) or (
                    methods is not None and name in methods
                ):
                    await asyncio.sleep(delay)
            if name.startswith(("send", "edit")) and not await self._through_hold(params):
                raise _ApiError(502, "Bad Gateway: dropped by release_sends")
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except _ApiError as error:
            log.debug("Bot API %s -> %s %s", name, error.code, error.description)
            return JSONResponse(error.payload(), status_code=error.code)
        return JSONResponse({"ok": True, "result": result})

    async def _read_params(self, request: Request) -> tuple[dict[str, Any], dict[str, _Upload]]:
        params: dict[str, Any] = dict(request.query_params)
        files: dict[str, _Upload] = {}
        body = await request.body()
        if not body:
            return params, files
        content_type = request.headers.get("content-type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == "application/json":
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _bad("can't parse JSON object") from exc
            if not isinstance(data, dict):
                raise _bad("can't parse JSON object")
            params.update(data)
        elif media_type == "application/x-www-form-urlencoded":
            text = body.decode("utf-8", "replace")
            params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        elif media_type == "multipart/form-data":
            fields, files = _parse_multipart(body, content_type)
            params.update(fields)
        return params, files

    async def _handle_file(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401
            )
        stored = self._files_by_path.get(request.path_params["file_path"])
        if stored is None:
            return JSONResponse(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404
            )
        return Response(stored.data, media_type=stored.mime_type or "application/octet-stream")

    # -- Bot API: helpers ------------------------------------------------------------------

    def _bot_json(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _resolve_chat(self, params: dict[str, Any]) -> _Chat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat_id = _as_int(raw)
        chat = self._chats.get(chat_id) if chat_id is not None else None
        if chat is None or not chat.known:
            raise _bad("chat not found")
        return chat

    def _message_id_param(self, params: dict[str, Any]) -> int:
        raw = params.get("message_id")
        if raw is None or raw == "":
            raise _bad("message identifier is not specified")
        message_id = _as_int(raw)
        if message_id is None:
            raise _bad("message identifier is not specified")
        return message_id

    def _formatted(
        self, params: dict[str, Any], name: str, *, limit: int, caption: bool
    ) -> tuple[str, str, list[dict[str, Any]]]:
        """Validate a text or caption parameter: ``(raw, plain text, entities)``."""
        raw = params.get(name)
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            raw = json.dumps(raw) if isinstance(raw, (dict, list)) else str(raw)
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _bad("strings must be encoded in UTF-8") from exc
        parse_mode = params.get("parse_mode")
        if parse_mode:
            mode = str(parse_mode).lower()
            if mode != "html":
                if mode in ("markdown", "markdownv2"):
                    raise _bad(
                        f"parse_mode {parse_mode} is not supported by the emulator (use HTML)"
                    )
                raise _bad("unsupported parse_mode")
            try:
                plain, entities = parse_html(raw, strict=self.strict_html)
            except HtmlParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from exc
        else:
            plain = raw
            given = _json_param(
                params.get("caption_entities" if caption else "entities") or [],
                "can't parse entities JSON object",
            )
            entities = [dict(e) for e in given if isinstance(e, dict)]
        plain, entities = _trim_text(plain, entities)
        if caption:
            if utf16_len(plain) > limit:
                raise _bad("message caption is too long")
        else:
            if not plain:
                raise _bad("message text is empty")
            if utf16_len(plain) > limit:
                raise _bad("message is too long")
        return raw, plain, entities

    def _reply_markup(
        self, params: dict[str, Any], *, inline_only: bool = False
    ) -> dict[str, Any] | None:
        raw = params.get("reply_markup")
        if raw is None or raw == "":
            return None
        markup = _json_param(raw, "can't parse reply keyboard markup JSON object")
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            return {"inline_keyboard": self._inline_keyboard(markup["inline_keyboard"])}
        if inline_only:
            raise _bad("inline keyboard expected")
        if "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad("can't parse reply keyboard markup JSON object")
            keyboard = []
            for row in rows:
                buttons = []
                for button in row:
                    if isinstance(button, str):
                        button = {"text": button}
                    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                        raise _bad(
                            'can\'t parse keyboard button: Field "text" must be of type String'
                        )
                    if not button["text"].strip():
                        raise _bad("can't parse keyboard button: Text must be non-empty")
                    buttons.append({k: v for k, v in button.items() if v not in (None, False)})
                if buttons:
                    keyboard.append(buttons)
            result = {k: v for k, v in markup.items() if k != "keyboard"}
            result["keyboard"] = keyboard
            return result
        if _as_bool(markup.get("remove_keyboard")):
            return {"remove_keyboard": True}
        if _as_bool(markup.get("force_reply")):
            return {k: v for k, v in markup.items()}
        raise _bad("can't parse reply keyboard markup JSON object")

    def _inline_keyboard(self, rows: Any) -> list[list[dict[str, Any]]]:
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad(
                'can\'t parse inline keyboard button: Field "inline_keyboard" must be of type Array'
            )
        keyboard: list[list[dict[str, Any]]] = []
        for row in rows:
            buttons = []
            for button in row:
                if not isinstance(button, dict) or "text" not in button:
                    raise _bad("can't parse inline keyboard button: Can't find field \"text\"")
                if not isinstance(button["text"], str):
                    raise _bad(
                        'can\'t parse inline keyboard button: Field "text" must be of type String'
                    )
                clean = {k: v for k, v in button.items() if v is not None}
                actions = [key for key in _INLINE_BUTTON_ACTIONS if key in clean]
                if not clean["text"].strip() or not actions or clean.get("callback_data") == "":
                    raise _bad(
                        "can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard"
                    )
                if "callback_data" in clean:
                    data = clean["callback_data"]
                    if not isinstance(data, str) or len(data.encode("utf-8")) > CALLBACK_DATA_LIMIT:
                        raise _bad("BUTTON_DATA_INVALID")
                if "url" in clean:
                    url = clean["url"]
                    if not isinstance(url, str) or not re.match(r"(https?|tg)://\S+$", url):
                        raise _bad("BUTTON_URL_INVALID")
                buttons.append(clean)
            if buttons:
                keyboard.append(buttons)
        return keyboard

    def _reply_to(self, params: dict[str, Any], chat: _Chat) -> int | None:
        reply = _json_param(params.get("reply_parameters") or {}, "can't parse reply parameters")
        if not isinstance(reply, dict):
            raise _bad("can't parse reply parameters")
        message_id = _as_int(reply.get("message_id"))
        allow_without = _as_bool(reply.get("allow_sending_without_reply", False))
        if message_id is None:
            message_id = _as_int(params.get("reply_to_message_id"))
            allow_without = _as_bool(params.get("allow_sending_without_reply", False))
        if message_id is None:
            return None
        if message_id not in chat.raw:
            if allow_without:
                return None
            raise _bad("message to be replied not found")
        return message_id

    def _store_message(
        self,
        chat: _Chat,
        *,
        sender: EmulatedUser | None,
        content: dict[str, Any],
        text: str,
        html_text: str,
        entities: list[dict[str, Any]],
        kind: str,
        reply_markup: dict[str, Any] | None = None,
        reply_to: int | None = None,
        stored_file: _StoredFile | None = None,
        contact: dict[str, Any] | None = None,
    ) -> EmulatedMessage:
        message_id = chat.new_message_id()
        date = int(self.clock())
        raw: dict[str, Any] = {
            "message_id": message_id,
            "from": self._bot_json() if sender is None else sender.to_json(),
            "chat": chat.to_json(),
            "date": date,
        }
        if reply_to is not None:
            replied = dict(chat.raw[reply_to])
            replied.pop("reply_to_message", None)
            raw["reply_to_message"] = replied
        raw.update(content)
        if reply_markup and "inline_keyboard" in reply_markup:
            raw["reply_markup"] = reply_markup
        message = EmulatedMessage(
            message_id=message_id,
            chat_id=chat.id,
            from_bot=sender is None,
            sender_id=self.bot_id if sender is None else sender.id,
            text=text,
            html=html_text,
            date=date,
            kind=kind,
            entities=entities,
            reply_markup=reply_markup,
            contact=contact,
            reply_to_message_id=reply_to,
            raw=raw,
        )
        if stored_file is not None:
            message.file_id = stored_file.file_id
            if kind == "photo":
                message.photo = stored_file.data
            else:
                message.document = stored_file.data
                message.document_name = stored_file.file_name
        if sender is None and reply_markup is not None:
            if "keyboard" in reply_markup:
                chat.reply_keyboard = reply_markup
            elif reply_markup.get("remove_keyboard"):
                chat.reply_keyboard = None
        chat.messages[message_id] = message
        chat.raw[message_id] = raw
        self._add_event(chat, "message", message)
        return message

    def _add_event(
        self, chat: _Chat, kind: str, message: EmulatedMessage | None = None, **extra: Any
    ) -> None:
        event = _Event(self._next_seq(), kind, message=message, **extra)
        if message is not None:
            message.seq = event.seq
        chat.events.append(event)
        self._notify()

    def _delivered(self, method: str, chat: _Chat, message_id: int | None) -> None:
        self.deliveries.append(
            Delivery(
                len(self.deliveries) + 1, method, chat.id, message_id, time.monotonic(), time.time()
            )
        )

    def _store_file(
        self, upload: _Upload, kind: str, *, width: int = 0, height: int = 0
    ) -> _StoredFile:
        number = next(self._file_counter)
        mime = upload.content_type
        if kind == "photo":
            mime = _image_mime(upload.data) or mime
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
        if kind == "photo":
            path = f"photos/file_{number}.jpg"
        else:
            extension = ""
            match = re.search(r"\.([A-Za-z0-9]{1,8})$", upload.filename or "")
            if match:
                extension = "." + match.group(1).lower()
            path = f"documents/file_{number}{extension}"
        prefix = "AgAC" if kind == "photo" else "BQAC"
        stored = _StoredFile(
            file_id=f"{prefix}{secrets.token_urlsafe(24)}",
            file_unique_id=f"AQAD{secrets.token_urlsafe(9)}",
            data=upload.data,
            kind=kind,
            file_path=path,
            file_name=upload.filename if kind != "photo" else None,
            mime_type=mime,
            width=width,
            height=height,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[path] = stored
        return stored

    def _input_file(
        self, params: dict[str, Any], files: dict[str, _Upload], name: str
    ) -> _Upload | _StoredFile:
        upload = files.get(name)
        if upload is not None:
            return upload
        value = params.get(name)
        if value is None or value == "":
            raise _bad(f"there is no {name} in the request")
        value = str(value)
        if value.startswith("attach://"):
            attached = files.get(value[len("attach://") :])
            if attached is None:
                raise _bad(f"there is no {name} in the request")
            return attached
        stored = self._files.get(value)
        if stored is not None:
            if stored.kind != name:
                raise _bad("type of file mismatch")
            return stored
        if re.match(r"https?://", value):
            raise _bad("failed to get HTTP URL content")
        raise _bad("wrong file identifier/HTTP URL specified")

    # -- Bot API: methods ------------------------------------------------------------------

    def _api_get_me(self, params: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        return {
            **self._bot_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _api_get_updates(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> list[dict[str, Any]]:
        if self._updates_retry_after is not None:
            self.updates_refused += 1
            raise _too_many_requests(self._updates_retry_after)
        if self.webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = _as_int(params.get("offset", 0)) or 0
        limit = min(100, max(1, _as_int(params.get("limit", 100)) or 100))
        timeout = max(0, _as_int(params.get("timeout", 0)) or 0)
        allowed = params.get("allowed_updates")
        if allowed is not None and allowed != "":
            allowed = _json_param(allowed, "can't parse allowed updates")
            if isinstance(allowed, list):
                self._allowed_updates = frozenset(map(str, allowed)) if allowed else None
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # a long poll of another getUpdates request ends with 409
        self._confirm(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            changed = self._changed
            batch = self._take_batch(limit)
            if batch or self._closing:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            normal = [e for e in self._queue if not e.forced]
            keep = {id(e) for e in normal[offset:]}
            self._queue = [e for e in self._queue if e.forced or id(e) in keep]
            return
        if offset > self._confirmed_below:
            self._confirmed_below = offset
        self._queue = [e for e in self._queue if e.forced or e.update_id >= self._confirmed_below]
        self._notify()

    def _is_allowed(self, kind: str) -> bool:
        if self._allowed_updates is None:
            return kind not in _DEFAULT_EXCLUDED_UPDATES
        return kind in self._allowed_updates

    def _take_batch(self, limit: int) -> list[dict[str, Any]]:
        self._queue = [e for e in self._queue if self._is_allowed(e.kind)]
        ordered = [e for e in self._queue if e.forced] + [e for e in self._queue if not e.forced]
        batch = ordered[:limit]
        for entry in batch:
            entry.delivered = True
        if batch:
            delivered_forced = {id(e) for e in batch if e.forced}
            self._queue = [e for e in self._queue if id(e) not in delivered_forced]
            self._notify()
        return [copy.deepcopy(entry.update) for entry in batch]

    def _api_send_message(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        chat = self._resolve_chat(params)
        raw, plain, entities = self._formatted(
            params, "text", limit=MESSAGE_TEXT_LIMIT, caption=False
        )
        markup = self._reply_markup(params)
        reply_to = self._reply_to(params, chat)
        self._check_send_faults("sendMessage", chat)
        content: dict[str, Any] = {"text": plain}
        if entities:
            content["entities"] = entities
        message = self._store_message(
            chat,
            sender=None,
            content=content,
            text=plain,
            html_text=raw,
            entities=entities,
            kind="text",
            reply_markup=markup,
            reply_to=reply_to,
        )
        self._delivered("sendMessage", chat, message.message_id)
        return message.raw

    def _send_file(
        self, method: str, kind: str, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        chat = self._resolve_chat(params)
        source = self._input_file(params, files, kind)
        raw, plain, entities = self._formatted(params, "caption", limit=CAPTION_LIMIT, caption=True)
        markup = self._reply_markup(params)
        reply_to = self._reply_to(params, chat)
        if isinstance(source, _Upload):
            if not source.data:
                raise _bad("file must be non-empty")
            if kind == "photo":
                if len(source.data) > PHOTO_UPLOAD_LIMIT:
                    raise _bad("PHOTO_SAVE_FILE_INVALID")
                size = _image_size(source.data)
                if size is None:
                    raise _bad("IMAGE_PROCESS_FAILED")
                width, height = size
                if (
                    width <= 0
                    or height <= 0
                    or width + height > 10000
                    or max(width, height) > 20 * min(width, height)
                ):
                    raise _bad("PHOTO_INVALID_DIMENSIONS")
            elif len(source.data) > DOCUMENT_UPLOAD_LIMIT:
                raise _ApiError(413, "Request Entity Too Large")
        self._check_send_faults(method, chat)
        if isinstance(source, _Upload):
            width, height = (_image_size(source.data) or (0, 0)) if kind == "photo" else (0, 0)
            stored = self._store_file(source, kind, width=width, height=height)
        else:
            stored = source
        content: dict[str, Any]
        if kind == "photo":
            content = {
                "photo": [
                    {
                        "file_id": stored.file_id,
                        "file_unique_id": stored.file_unique_id,
                        "file_size": len(stored.data),
                        "width": stored.width,
                        "height": stored.height,
                    }
                ]
            }
        else:
            document: dict[str, Any] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.data),
            }
            if stored.file_name:
                document["file_name"] = stored.file_name
            if stored.mime_type:
                document["mime_type"] = stored.mime_type
            content = {"document": document}
        if plain:
            content["caption"] = plain
            if entities:
                content["caption_entities"] = entities
        message = self._store_message(
            chat,
            sender=None,
            content=content,
            text=plain,
            html_text=raw,
            entities=entities,
            kind=kind,
            reply_markup=markup,
            reply_to=reply_to,
            stored_file=stored,
        )
        self._delivered(method, chat, message.message_id)
        return message.raw

    def _api_send_document(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        return self._send_file("sendDocument", "document", params, files)

    def _api_send_photo(self, params: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        return self._send_file("sendPhoto", "photo", params, files)

    def _editable(self, params: dict[str, Any]) -> tuple[_Chat, EmulatedMessage]:
        if params.get("inline_message_id"):
            raise _bad("message to edit not found")
        chat = self._resolve_chat(params)
        message_id = self._message_id_param(params)
        message = chat.messages.get(message_id)
        if message is None:
            raise _bad("message to edit not found")
        if not message.from_bot:
            raise _bad("message can't be edited")
        return chat, message

    def _apply_edit(
        self,
        method: str,
        chat: _Chat,
        old: EmulatedMessage,
        *,
        text: str,
        html_text: str,
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        # Only a fault that names the edit method applies (fail_chat's default is send*).
        self._check_send_faults(method, chat)
        old_markup = old.reply_markup if old.inline_keyboard else None
        if text == old.text and entities == old.entities and markup == old_markup:
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        raw = copy.deepcopy(chat.raw[old.message_id])
        if old.kind == "text":
            raw["text"] = text
            raw.pop("entities", None)
            if entities:
                raw["entities"] = entities
        else:
            raw.pop("caption", None)
            raw.pop("caption_entities", None)
            if text:
                raw["caption"] = text
                if entities:
                    raw["caption_entities"] = entities
        raw.pop("reply_markup", None)
        if markup:
            raw["reply_markup"] = markup
        raw["edit_date"] = int(self.clock())
        message = copy.copy(old)
        message.text = text
        message.html = html_text
        message.entities = entities
        message.reply_markup = markup
        message.edited = True
        message.raw = raw
        chat.messages[old.message_id] = message
        chat.raw[old.message_id] = raw
        self._add_event(chat, "edit", message)
        self._delivered(method, chat, old.message_id)
        return raw

    def _api_edit_message_text(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        chat, old = self._editable(params)
        raw, plain, entities = self._formatted(
            params, "text", limit=MESSAGE_TEXT_LIMIT, caption=False
        )
        markup = self._reply_markup(params, inline_only=True)
        if old.kind != "text":
            raise _bad("there is no text in the message to edit")
        return self._apply_edit(
            "editMessageText",
            chat,
            old,
            text=plain,
            html_text=raw,
            entities=entities,
            markup=markup,
        )

    def _api_edit_message_caption(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        chat, old = self._editable(params)
        raw, plain, entities = self._formatted(params, "caption", limit=CAPTION_LIMIT, caption=True)
        markup = self._reply_markup(params, inline_only=True)
        if old.kind == "text":
            raise _bad("there is no caption in the message to edit")
        return self._apply_edit(
            "editMessageCaption",
            chat,
            old,
            text=plain,
            html_text=raw,
            entities=entities,
            markup=markup,
        )

    def _api_edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        chat, old = self._editable(params)
        markup = self._reply_markup(params, inline_only=True)
        return self._apply_edit(
            "editMessageReplyMarkup",
            chat,
            old,
            text=old.text,
            html_text=old.html,
            entities=old.entities,
            markup=markup,
        )

    def _api_delete_message(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        chat = self._resolve_chat(params)
        message_id = self._message_id_param(params)
        message = chat.messages.get(message_id)
        if message is None:
            raise _bad("message to delete not found")
        if chat.type != "private" and not message.from_bot:
            raise _bad("message can't be deleted")
        del chat.messages[message_id]
        self._add_event(chat, "delete", message_id=message_id)
        return True

    def _api_answer_callback_query(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        query = self._callback_queries.get(query_id)
        expired = (
            query is None
            or query.answer is not None
            or time.monotonic() - query.created > self.callback_query_ttl
        )
        if expired:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        assert query is not None
        text = params.get("text")
        if text is not None and utf16_len(str(text)) > CALLBACK_ANSWER_TEXT_LIMIT:
            raise _bad("MESSAGE_TOO_LONG")
        answer = {
            "callback_query_id": query_id,
            "text": str(text) if text is not None else None,
            "show_alert": _as_bool(params.get("show_alert", False)),
            "url": params.get("url"),
        }
        query.answer = answer
        user = self._users.get(query.user_id)
        if user is not None:
            user.callback_answers.append(answer)
        chat = self._chats.get(query.chat_id)
        if chat is not None:
            self._add_event(chat, "answer", answer=answer, message_id=query.message_id)
        return True

    @staticmethod
    def _scope_key(scope: Any) -> str:
        scope = _json_param(scope or {"type": "default"}, "can't parse BotCommandScope JSON object")
        if not isinstance(scope, dict) or scope.get("type") not in _COMMAND_SCOPES:
            raise _bad("can't parse BotCommandScope JSON object")
        normalized = dict(scope)
        for key in ("chat_id", "user_id"):
            if key in normalized:
                value = _as_int(normalized[key])
                if value is None:
                    raise _bad("chat not found")
                normalized[key] = value
        return json.dumps(normalized, sort_keys=True)

    def _language(self, params: dict[str, Any]) -> str:
        language = str(params.get("language_code") or "")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise _bad("invalid language code specified")
        return language

    def _api_set_my_commands(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        commands = _json_param(params.get("commands"), "can't parse commands JSON object")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        stored = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse BotCommand JSON object")
            name = str(command.get("command", "")).lstrip("/")
            description = str(command.get("description", ""))
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad("BOT_COMMAND_INVALID")
            if not description.strip() or len(description) > 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            stored.append({"command": name, "description": description})
        key = (self._scope_key(params.get("scope")), self._language(params))
        if stored:
            self._commands[key] = stored
        else:
            self._commands.pop(key, None)
        return True

    def _api_get_my_commands(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> list[dict[str, str]]:
        key = (self._scope_key(params.get("scope")), self._language(params))
        return list(self._commands.get(key, []))

    def _api_delete_my_commands(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        key = (self._scope_key(params.get("scope")), self._language(params))
        self._commands.pop(key, None)
        return True

    def _drop_pending(self, params: dict[str, Any]) -> None:
        if _as_bool(params.get("drop_pending_updates", False)):
            self._queue.clear()
            self._notify()

    def _api_delete_webhook(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        self._drop_pending(params)
        self.webhook = None
        self._webhook_error = None
        self._notify()  # the delivery loop sees there is no webhook and ends
        return True

    def _api_set_webhook(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return self._api_delete_webhook(params, files)
        if not url.lower().startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if allowed not in (None, ""):
            allowed = _json_param(allowed, "can't parse allowed updates")
            self._allowed_updates = frozenset(map(str, allowed)) if allowed else None
        self._drop_pending(params)
        self.webhook = {
            "url": url,
            "secret_token": secret,
            "max_connections": _as_int(params.get("max_connections")) or 40,
        }
        self._ensure_webhook_delivery()
        self._notify()
        return True

    def _api_get_webhook_info(
        self, params: dict[str, Any], files: dict[str, _Upload]
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self.webhook:
            info["max_connections"] = self.webhook["max_connections"]
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
            if self._webhook_error is not None:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    # -- webhook delivery ------------------------------------------------------------------

    def route_webhook(
        self,
        targets: Iterable[str],
        *,
        retry_delay: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        """Deliver what is POSTed to the registered webhook URL to these local URLs instead,
        round-robin, as a load balancer in front of several bot processes would.

        ``retry_delay``: seconds before an update without a 2xx is posted again (to the next
        target); ``timeout``: seconds a target has to answer. An empty list stops delivery.
        """
        urls = [str(url) for url in targets]
        for url in urls:
            if not url.lower().startswith(("http://", "https://")):
                raise ValueError(f"not an http(s) URL: {url!r}")
        if retry_delay < 0 or timeout <= 0:
            raise ValueError("retry_delay must be >= 0 and timeout > 0")
        self._webhook_targets = urls
        self._webhook_retry_delay = retry_delay
        self._webhook_timeout = timeout
        self._ensure_webhook_delivery()
        self._notify()

    def set_send_delay(self, seconds: float, methods: Iterable[str] | None = None) -> None:
        """Answer send*/edit* requests (or these methods) only after ``seconds``: a slow
        Telegram, so a test can catch an update in the middle of being handled. 0 turns it
        off."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._send_delay = (seconds, frozenset(methods) if methods else None) if seconds else None

    def hold_sends(self, chat_id: int) -> None:
        """Keep send*/edit* requests to ``chat_id`` waiting, unanswered and undelivered,
        until ``release_sends``: a bot caught in the middle of its reply, which a test can
        then kill."""
        self._held_chats.setdefault(chat_id, _Hold())

    def release_sends(self, chat_id: int | None = None, *, deliver: bool = True) -> None:
        """Let the held requests of one chat (or of all) through; with ``deliver`` False they
        are dropped instead, as replies of a process that died before they reached
        Telegram."""
        chats = list(self._held_chats) if chat_id is None else [chat_id]
        for chat in chats:
            hold = self._held_chats.pop(chat, None)
            if hold is not None:
                hold.deliver = deliver
                hold.released.set()

    async def _through_hold(self, params: dict[str, Any]) -> bool:
        """Wait while the request's chat is held; whether it is then delivered."""
        try:
            hold = self._held_chats.get(int(params.get("chat_id", 0)))
        except (TypeError, ValueError):
            return True
        if hold is None:
            return True
        self.held_sends.append(params)
        try:
            await hold.released.wait()
        finally:
            self.held_sends.remove(params)
        return hold.deliver

    def webhook_posting(self, update_id: int) -> str | None:
        """The webhook URL a POST of this update is under way to, if one is."""
        for entry in self._queue:
            if entry.update_id == update_id and entry.in_flight and entry.last_target is not None:
                return self._webhook_targets[entry.last_target]
        return None

    @property
    def webhook_in_flight(self) -> int:
        """Webhook POSTs under way now."""
        return len(self._webhook_posts)

    def _ensure_webhook_delivery(self) -> None:
        if self._server is None or self.webhook is None or not self._webhook_targets:
            return
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._deliver_webhooks())

    async def _stop_webhook_delivery(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    def _update_chat(update: dict[str, Any]) -> int | None:
        """The chat an update belongs to: its updates are delivered one after another."""
        for key, value in update.items():
            if key == "update_id" or not isinstance(value, dict):
                continue
            chat = value.get("chat") or (value.get("message") or {}).get("chat")
            if isinstance(chat, dict) and "id" in chat:
                return int(chat["id"])
            sender = value.get("from")
            if isinstance(sender, dict) and "id" in sender:
                return int(sender["id"])
        return None

    async def _deliver_webhooks(self) -> None:
        loop = asyncio.get_running_loop()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        client = httpx.AsyncClient(timeout=self._webhook_timeout, limits=limits)
        try:
            while self.webhook is not None and self._webhook_targets and not self._closing:
                changed = self._changed
                now = loop.time()
                self._queue = [e for e in self._queue if self._is_allowed(e.kind)]
                busy = {self._update_chat(e.update) for e in self._queue if e.in_flight}
                wake_at = math.inf
                for entry in self._queue:
                    if len(self._webhook_posts) >= self.webhook["max_connections"]:
                        break
                    if entry.in_flight:
                        continue
                    chat = self._update_chat(entry.update)
                    if chat is not None and chat in busy:
                        continue  # an earlier update of this chat has not got its 2xx yet
                    if chat is not None:
                        busy.add(chat)
                    if entry.not_before > now:
                        wake_at = min(wake_at, entry.not_before)
                        continue
                    self._post_webhook(client, entry)
                timeout = None if wake_at == math.inf else max(0.0, wake_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)
        finally:
            posts = list(self._webhook_posts)
            for post in posts:
                post.cancel()
            await asyncio.gather(*posts, return_exceptions=True)
            await client.aclose()

    def _post_webhook(self, client: httpx.AsyncClient, entry: _QueuedUpdate) -> None:
        count = len(self._webhook_targets)
        if entry.last_target is None:
            index = self._webhook_next_target % count
            self._webhook_next_target += 1
        else:  # a redelivery goes to another target than the one that failed
            index = (entry.last_target + 1) % count
        entry.last_target = index
        entry.in_flight = True
        post = asyncio.create_task(self._post_one(client, entry, self._webhook_targets[index]))
        self._webhook_posts.add(post)
        post.add_done_callback(self._webhook_posts.discard)

    async def _post_one(self, client: httpx.AsyncClient, entry: _QueuedUpdate, url: str) -> None:
        assert self.webhook is not None
        headers = {"Content-Type": "application/json"}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(self.webhook["secret_token"])
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            response = await client.post(url, content=json.dumps(entry.update), headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"Wrong response from the webhook: {status} {response.reason_phrase}"
        except httpx.TimeoutException:
            error = "Read timeout expired"
        except httpx.ConnectError:
            error = "Connection refused"
        except httpx.HTTPError as failure:
            error = f"Connection failed: {type(failure).__name__}"
        finally:
            entry.in_flight = False  # also when cancelled: polling or a later webhook gets it
        self.webhook_attempts.append(
            WebhookAttempt(entry.update_id, url, status, error, started, time.monotonic())
        )
        if error is None:
            entry.delivered = True
            self._queue = [e for e in self._queue if e is not entry]
        else:
            entry.not_before = asyncio.get_running_loop().time() + self._webhook_retry_delay
            self._webhook_error = (int(self.clock()), error)
            log.debug("webhook delivery of %s failed: %s", entry.update_id, error)
        # Free the connection slot before waking the delivery loop (the done callback would
        # come a turn too late, and the loop would wait for a change that never comes).
        self._webhook_posts.discard(asyncio.current_task())  # type: ignore[arg-type]
        self._notify()

    def _api_get_file(self, params: dict[str, Any], files: dict[str, _Upload]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if len(stored.data) > DOWNLOAD_LIMIT:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    def _api_send_chat_action(self, params: dict[str, Any], files: dict[str, _Upload]) -> bool:
        chat = self._resolve_chat(params)
        action = str(params.get("action") or "")
        if action not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._check_send_faults("sendChatAction", chat)
        chat.last_action = action
        return True

    # -- building updates (the people's side) ----------------------------------------------

    def _chat_for(self, user: EmulatedUser, chat: EmulatedGroup | int | None) -> _Chat:
        if chat is None:
            return self._chats[user.id]
        chat_id = chat.id if isinstance(chat, EmulatedGroup) else int(chat)
        found = self._chats.get(chat_id)
        if found is None:
            raise AssertionError(f"no chat {chat_id}")
        return found

    def _open_chat(self, user: EmulatedUser, chat: EmulatedGroup | int | None) -> _Chat:
        target = self._chat_for(user, chat)
        if target.type == "private":
            if target.id != user.id:
                raise AssertionError(f"{user!r} cannot write in another person's private chat")
            if user.blocked:
                raise AssertionError(f"{user!r} blocked the bot; unblock_bot() first")
            target.known = True
        elif user.id not in target.members:
            raise AssertionError(f"{user!r} is not a member of chat {target.id}")
        return target

    def _queue_message_update(
        self, chat: _Chat, message: EmulatedMessage, delivered: bool
    ) -> int | None:
        if not delivered:
            return None
        return self.push_update({"message": copy.deepcopy(message.raw)})

    def _hide_one_time_keyboard(self, chat: _Chat) -> None:
        if chat.reply_keyboard and chat.reply_keyboard.get("one_time_keyboard"):
            chat.reply_keyboard = None

    async def _user_text(
        self,
        user: EmulatedUser,
        text: str,
        chat_ref: EmulatedGroup | int | None,
        reply_to: EmulatedMessage | int | None,
    ) -> int | None:
        chat = self._open_chat(user, chat_ref)
        if not text.strip():
            raise AssertionError("Telegram clients do not send empty messages")
        entities = []
        for match in re.finditer(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,64})?", text):
            entities.append(
                {
                    "type": "bot_command",
                    "offset": utf16_len(text[: match.start()]),
                    "length": utf16_len(match.group(0)),
                }
            )
        reply_id = reply_to.message_id if isinstance(reply_to, EmulatedMessage) else reply_to
        if reply_id is not None and reply_id not in chat.raw:
            raise AssertionError(f"no message {reply_id} to reply to")
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        message = self._store_message(
            chat,
            sender=user,
            content=content,
            text=text,
            html_text=html.escape(text, quote=False),
            entities=entities,
            kind="text",
            reply_to=reply_id,
        )
        self._hide_one_time_keyboard(chat)
        visible = True
        if chat.type != "private" and chat.privacy:
            mention = f"@{self.bot_username}".lower()
            command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
            to_bot = command is not None and (
                command.group(1) is None or command.group(1).lower() == mention
            )
            replied_bot = reply_id is not None and chat.messages[reply_id].from_bot
            visible = to_bot or mention in text.lower() or replied_bot
        return self._queue_message_update(chat, message, visible)

    async def _share_contact(
        self,
        user: EmulatedUser,
        phone: str | None,
        contact_user_id: int | None,
        first_name: str | None,
        last_name: str | None,
    ) -> int:
        chat = self._open_chat(user, None)
        phone = phone or user.phone
        if not phone:
            raise AssertionError(f"{user!r} has no phone number; pass one")
        own = contact_user_id is None or contact_user_id == user.id
        contact: dict[str, Any] = {
            "phone_number": phone,
            "first_name": first_name or (user.first_name if own else "Contact"),
        }
        last = last_name if last_name is not None else (user.last_name if own else None)
        if last:
            contact["last_name"] = last
        if contact_user_id is None:
            contact["user_id"] = user.id
        elif contact_user_id:
            contact["user_id"] = contact_user_id
        message = self._store_message(
            chat,
            sender=user,
            content={"contact": contact},
            text=phone,
            html_text=html.escape(phone),
            entities=[],
            kind="contact",
            contact=contact,
        )
        self._hide_one_time_keyboard(chat)
        update_id = self._queue_message_update(chat, message, True)
        assert update_id is not None
        return update_id

    async def _user_media(
        self,
        user: EmulatedUser,
        kind: str,
        *,
        emoji: str = "👍",
        data: bytes | None = None,
        caption: str | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
    ) -> int:
        chat = self._open_chat(user, None)
        if kind == "document":
            stored = self._store_file(
                _Upload(filename or "file", mime_type or "", data or b""), "document"
            )
            document: dict[str, Any] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.data),
                "mime_type": stored.mime_type,
            }
            if filename:
                document["file_name"] = filename
            content: dict[str, Any] = {"document": document}
            if caption:
                content["caption"] = caption
            message = self._store_message(
                chat, sender=user, content=content, text=caption or "",
                html_text=html.escape(caption or "", quote=False), entities=[], kind="document",
                stored_file=stored,
            )  # fmt: skip
            update_id = self._queue_message_update(chat, message, True)
            assert update_id is not None
            return update_id
        if kind == "sticker":
            content: dict[str, Any] = {
                "sticker": {
                    "file_id": f"CAAC{secrets.token_urlsafe(24)}",
                    "file_unique_id": f"AgAD{secrets.token_urlsafe(9)}",
                    "type": "regular",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                    "emoji": emoji,
                }
            }
            message = self._store_message(
                chat, sender=user, content=content, text=emoji, html_text=emoji,
                entities=[], kind="sticker",
            )  # fmt: skip
        else:
            image = data or _TINY_PNG
            size = _image_size(image) or (1, 1)
            stored = self._store_file(
                _Upload("photo.png", "image/png", image), "photo", width=size[0], height=size[1]
            )
            content = {
                "photo": [
                    {
                        "file_id": stored.file_id,
                        "file_unique_id": stored.file_unique_id,
                        "file_size": len(image),
                        "width": size[0],
                        "height": size[1],
                    }
                ]
            }
            if caption:
                content["caption"] = caption
            message = self._store_message(
                chat, sender=user, content=content, text=caption or "",
                html_text=html.escape(caption or "", quote=False), entities=[], kind="photo",
                stored_file=stored,
            )  # fmt: skip
        update_id = self._queue_message_update(chat, message, True)
        assert update_id is not None
        return update_id

    def _find_button_message(
        self,
        chat: _Chat,
        text: str | None,
        callback_data: str | None,
        message: EmulatedMessage | int | None,
    ) -> tuple[EmulatedMessage, dict[str, Any]]:
        if message is not None:
            message_id = message.message_id if isinstance(message, EmulatedMessage) else message
            current = chat.messages.get(message_id)
            candidates = [current] if current is not None else []
        else:
            candidates = [m for m in reversed(chat.messages.values()) if m.from_bot]
        for candidate in candidates:
            for row in candidate.inline_keyboard:
                for button in row:
                    if text is not None and button["text"] != text:
                        continue
                    if callback_data is not None and button.get("callback_data") != callback_data:
                        continue
                    return candidate, button
        available = [m.buttons for m in candidates if m.buttons]
        wanted = text if text is not None else f"callback_data={callback_data!r}"
        raise AssertionError(
            f"no inline button {wanted!r} in the chat (buttons on screen: {available})"
        )

    def _new_callback_query(
        self, user: EmulatedUser, chat: _Chat, message_id: int, data: str
    ) -> int:
        query_id = str(secrets.randbits(63))
        self._callback_queries[query_id] = _CallbackQuery(
            query_id, user.id, chat.id, message_id, time.monotonic()
        )
        user._last_query_id = query_id
        return self.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user.to_json(),
                    "message": copy.deepcopy(chat.raw[message_id]),
                    "chat_instance": chat.instance,
                    "data": data,
                }
            }
        )

    async def _press_button(
        self,
        user: EmulatedUser,
        text: str | None,
        callback_data: str | None,
        message: EmulatedMessage | int | None,
        chat_ref: EmulatedGroup | int | None,
    ) -> int:
        if text is None and callback_data is None:
            raise ValueError("press() needs the button text or its callback_data")
        chat = self._open_chat(user, chat_ref)
        found, button = self._find_button_message(chat, text, callback_data, message)
        if "callback_data" not in button:
            raise AssertionError(f"button {button['text']!r} is not a callback button: {button}")
        return self._new_callback_query(user, chat, found.message_id, button["callback_data"])

    async def _press_forged(
        self,
        user: EmulatedUser,
        data: str,
        message_id: int | None,
        chat_ref: EmulatedGroup | int | None,
    ) -> int:
        chat = self._open_chat(user, chat_ref)
        if message_id is None:
            bot_messages = [m for m in chat.messages.values() if m.from_bot]
            if not bot_messages:
                raise AssertionError("no bot message to attach a callback query to")
            message_id = bot_messages[-1].message_id
        if message_id not in chat.raw:
            raise AssertionError(f"no message {message_id} in chat {chat.id}")
        return self._new_callback_query(user, chat, message_id, data)

    async def _set_blocked(self, user: EmulatedUser, blocked: bool) -> int:
        chat = self._chats[user.id]
        chat.known = True
        member = {"user": self._bot_json(), "status": "member"}
        kicked = {"user": self._bot_json(), "status": "kicked", "until_date": 0}
        old, new = (member, kicked) if blocked else (kicked, member)
        user.blocked = blocked
        return self.push_update(
            {
                "my_chat_member": {
                    "chat": chat.to_json(),
                    "from": user.to_json(),
                    "date": int(self.clock()),
                    "old_chat_member": old,
                    "new_chat_member": new,
                }
            }
        )

    # -- HTTP: the sandbox page's JSON endpoints -------------------------------------------

    def _sandbox_user(self, value: Any) -> EmulatedUser:
        user_id = _as_int(value)
        user = self._users.get(user_id) if user_id is not None else None
        if user is None:
            raise _ApiError(404, f"no emulated user {value!r}")
        return user

    @staticmethod
    def _sandbox_error(error: Exception, status: int = 400) -> JSONResponse:
        if isinstance(error, _ApiError):
            status = error.code
        return JSONResponse({"ok": False, "error": str(error)}, status_code=status)

    async def _sandbox_body(self, request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as exc:
            raise _ApiError(400, "the body must be a JSON object") from exc
        if not isinstance(data, dict):
            raise _ApiError(400, "the body must be a JSON object")
        return data

    async def _sandbox_personas(self, request: Request) -> Response:
        return JSONResponse(
            {
                "personas": self.personas,
                "bot": {"username": self.bot_username, "first_name": self.bot_first_name},
            }
        )

    async def _sandbox_send(self, request: Request) -> Response:
        try:
            body = await self._sandbox_body(request)
            user = self._sandbox_user(body.get("user_id"))
            text = str(body.get("text") or "")
            if user.blocked:
                await user.unblock_bot()
            update_id = await user.send(text)
        except (_ApiError, AssertionError) as error:
            return self._sandbox_error(error)
        return JSONResponse({"ok": True, "update_id": update_id})

    async def _sandbox_press(self, request: Request) -> Response:
        try:
            body = await self._sandbox_body(request)
            user = self._sandbox_user(body.get("user_id"))
            message_id = _as_int(body.get("message_id"))
            data = body.get("callback_data")
            if message_id is None or not isinstance(data, str):
                raise _ApiError(400, "message_id and callback_data are required")
            update_id = await user.press(callback_data=data, message=message_id)
        except (_ApiError, AssertionError) as error:
            return self._sandbox_error(error)
        return JSONResponse({"ok": True, "update_id": update_id})

    async def _sandbox_contact(self, request: Request) -> Response:
        try:
            body = await self._sandbox_body(request)
            user = self._sandbox_user(body.get("user_id"))
            update_id = await user.share_contact(body.get("phone") or None)
        except (_ApiError, AssertionError) as error:
            return self._sandbox_error(error)
        return JSONResponse({"ok": True, "update_id": update_id})

    async def _sandbox_upload(self, request: Request) -> Response:
        """The page attaches a file: an image arrives as a photo, anything else as a document
        (a roster .xlsx, a signed report)."""
        try:
            body = await self._sandbox_body(request)
            user = self._sandbox_user(body.get("user_id"))
            try:
                data = base64.b64decode(str(body.get("data") or ""), validate=True)
            except ValueError as exc:
                raise _ApiError(400, "data must be base64") from exc
            if not data:
                raise _ApiError(400, "the file is empty")
            if len(data) > SANDBOX_UPLOAD_LIMIT:
                raise _ApiError(413, "the file is larger than 20 MB")
            filename = str(body.get("filename") or "file")[:255]
            mime_type = str(body.get("mime_type") or "") or None
            caption = str(body.get("caption") or "") or None
            if user.blocked:
                await user.unblock_bot()
            if mime_type in ("image/jpeg", "image/png") and _image_mime(data):
                update_id = await user.send_photo(data, caption=caption)
            else:
                update_id = await user.send_document(data, filename, caption, mime_type)
        except (_ApiError, AssertionError) as error:
            return self._sandbox_error(error)
        return JSONResponse({"ok": True, "update_id": update_id})

    def _sandbox_message_json(self, message: EmulatedMessage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "from_bot": message.from_bot,
            "kind": message.kind,
            "text": message.text,
            "entities": message.entities,
            "html": message.html if message.from_bot else html.escape(message.text, quote=False),
            "date": message.date,
            "edited": message.edited,
            "buttons": [
                [
                    {k: button[k] for k in ("text", "callback_data", "url") if k in button}
                    for button in row
                ]
                for row in message.inline_keyboard
            ],
            "reply_to_message_id": message.reply_to_message_id,
        }
        if message.file_id:
            stored = self._files.get(message.file_id)
            data["file"] = {
                "url": f"/_sandbox/file/{message.file_id}",
                "name": message.document_name,
                "size": len(stored.data) if stored else None,
                "mime_type": stored.mime_type if stored else None,
            }
        if message.contact:
            data["contact"] = message.contact
        return data

    async def _sandbox_messages(self, request: Request) -> Response:
        try:
            user = self._sandbox_user(request.query_params.get("user_id"))
        except _ApiError as error:
            return self._sandbox_error(error)
        after = _as_int(request.query_params.get("after", "0")) or 0
        try:
            wait = min(25.0, max(0.0, float(request.query_params.get("wait", "20") or 0)))
        except ValueError:
            return self._sandbox_error(ValueError("wait must be a number of seconds"))
        chat = self._chats[user.id]
        await self._wait_until(lambda: bool(chat.events) and chat.events[-1].seq > after, wait)
        first_new = bisect.bisect_right(chat.events, after, key=lambda e: e.seq)
        events = []
        for event in chat.events[first_new:]:
            item: dict[str, Any] = {"seq": event.seq, "type": event.kind}
            if event.message is not None:
                item["message"] = self._sandbox_message_json(event.message)
            if event.message_id is not None:
                item["message_id"] = event.message_id
            if event.answer is not None:
                item["answer"] = {
                    "text": event.answer["text"],
                    "show_alert": event.answer["show_alert"],
                }
            events.append(item)
        keyboard = chat.reply_keyboard
        return JSONResponse(
            {
                "seq": max([after] + [e.seq for e in chat.events]),
                "events": events,
                "reply_keyboard": keyboard["keyboard"] if keyboard else None,
                "blocked": user.blocked,
            }
        )

    async def _sandbox_commands(self, request: Request) -> Response:
        try:
            user = self._sandbox_user(request.query_params.get("user_id"))
        except _ApiError as error:
            return self._sandbox_error(error)
        return JSONResponse({"commands": self.effective_commands(user.id)})

    async def _sandbox_file(self, request: Request) -> Response:
        stored = self._files.get(request.path_params["file_id"])
        if stored is None:
            return JSONResponse({"ok": False, "error": "no such file"}, status_code=404)
        headers = {}
        if stored.file_name:
            quoted = urllib.parse.quote(stored.file_name)
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quoted}"
        return Response(
            stored.data,
            media_type=stored.mime_type or "application/octet-stream",
            headers=headers,
        )


def make_png(
    width: int = 1, height: int = 1, color: tuple[int, int, int] = (81, 125, 162)
) -> bytes:
    """A valid PNG of one colour: what emulated users send as photos (and handy in tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(color) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


_TINY_PNG = make_png()
