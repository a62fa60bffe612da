"""Whole conversations against the emulator, step by step (after Zulip's verify_dialog)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.context import Services

IDLE = 0.2


@dataclass
class Said:
    """What the bot did in answer to one action: its messages and the templates it used."""

    messages: list
    templates: list[str]

    @property
    def text(self) -> str:
        return "\n".join(message.text for message in self.messages)

    @property
    def last(self):
        assert self.messages, "the bot said nothing"
        return self.messages[-1]


async def act(svc: Services, user, action: Callable[[], Awaitable[object]]) -> Said:
    """Do one thing as `user` and collect every reply until the bot goes quiet."""
    mark = len(svc.renderer.history)
    await action()
    # Every action here gets at least one reply: wait for it however slow the machine is,
    # then collect the rest until the bot has been quiet for a moment.
    first = await user.next_reply(timeout=15)
    messages = [first, *await user.replies_until_idle(idle=IDLE, timeout=10)]
    return Said(messages=messages, templates=templates_since(svc, mark))


def templates_since(svc: Services, mark: int) -> list[str]:
    """Message templates rendered since `mark` (button labels are not messages)."""
    return [n for n in list(svc.renderer.history)[mark:] if n not in ("buttons", "commands")]


async def say(svc: Services, user, text: str) -> Said:
    return await act(svc, user, lambda: user.send(text))


async def press(svc: Services, user, label: str) -> Said:
    return await act(svc, user, lambda: user.press(label))


def label(svc: Services, key: str, locale: str = "vi") -> str:
    from handlers.common import button_label

    return button_label(svc, locale, key)
