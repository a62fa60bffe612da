"""Telegram's HTML subset: measuring and splitting messages without breaking tags."""

from __future__ import annotations

import html
import re

MAX_MESSAGE_LENGTH = 4096
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>")


def visible_length(text: str) -> int:
    """Length as Telegram counts it: entities decoded, tags dropped, in UTF-16 code units."""
    plain = html.unescape(_TAG.sub("", text))
    return len(plain.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Split at line breaks (then spaces) so each part fits, closing and reopening tags.

    A part never ends inside a tag or an entity, and formatting that spans the cut is
    closed at the end of one part and opened again at the start of the next.
    """
    # Tags and entities only shorten a text, and no character is more than two UTF-16
    # units: most texts fit without being measured.
    if 2 * len(text) <= limit or visible_length(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    open_tags: list[tuple[str, str]] = []  # (name, full opening tag)
    for token in _tokens(text):
        reopen = "".join(tag for _, tag in open_tags)
        closing = "".join(f"</{name}>" for name, _ in reversed(open_tags))
        if current and visible_length(current + token) > limit - 1:
            parts.append((current + closing).strip())
            current = reopen
        if visible_length(token) > limit:  # one unbroken run longer than a message
            for piece in _hard_wrap(token, limit - 1):
                if visible_length(current + piece) > limit - 1 and current.strip():
                    parts.append((current + closing).strip())
                    current = reopen
                current += piece
        else:
            current += token
        for match in _TAG.finditer(token):
            closing_tag, name = match.group(1), match.group(2).lower()
            if closing_tag:
                for index in range(len(open_tags) - 1, -1, -1):
                    if open_tags[index][0] == name:
                        del open_tags[index]
                        break
            else:
                open_tags.append((name, match.group(0)))
    if current.strip():
        parts.append(current.strip())
    return [part for part in parts if _TAG.sub("", part).strip()]


def _tokens(text: str) -> list[str]:
    """Lines (keeping their newline), and inside over-long lines, words."""
    tokens: list[str] = []
    for line in text.splitlines(keepends=True):
        if visible_length(line) > 200:
            tokens.extend(re.findall(r"\S+\s*|\s+", line))
        else:
            tokens.append(line)
    return tokens


def _hard_wrap(token: str, size: int) -> list[str]:
    """Cut a run with no spaces, never inside a tag or an entity."""
    pieces: list[str] = []
    units = re.findall(r"<[^>]*>|&#?\w+;|.", token, flags=re.S)
    current = ""
    for unit in units:
        if visible_length(current + unit) > size:
            pieces.append(current)
            current = ""
        current += unit
    if current:
        pieces.append(current)
    return pieces
