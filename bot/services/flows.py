"""Button-driven staff flows (/roles, /members, /invite) kept as ChatState rows.

Buttons carry `<prefix>:<action>[:<arg>]:<version>`; a button from an older step of the
flow (or from another flow) is stale. What a button names (a unit, a member) is checked
again by the service that acts on it: a valid version never makes forged ids trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatState
from bot.services import chat_state
from bot.services.errors import Refusal
from bot.services.people import Person


@dataclass(frozen=True)
class Press:
    """A parsed button: what it asks for, its argument, and the flow version it belongs to."""

    action: str
    arg: str
    version: int

    @property
    def number(self) -> int:
        if not self.arg.isdigit():
            raise Refusal("common/stale_button")
        return int(self.arg)


def parse(data: str) -> Press:
    parts = data.split(":")
    if len(parts) not in (3, 4) or not parts[-1].isdigit():
        raise Refusal("common/stale_button")
    return Press(parts[1], parts[2] if len(parts) == 4 else "", int(parts[-1]))


async def begin(
    session: AsyncSession, person: Person, flow: str, step: str, data: dict[str, Any], at: datetime
) -> ChatState:
    state = await chat_state.get_state(session, person.identity.id)
    state = chat_state.put_state(
        session, state, person.identity.id, flow, 0, {**data, "step": step}, at
    )
    await session.commit()
    return state


async def current(
    session: AsyncSession, person: Person, flow: str, version: int | None = None
) -> ChatState:
    """The chat's state in `flow`; a button of another version is stale."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != flow or (version is not None and version != state.version):
        raise Refusal("common/stale_button")
    return state


async def advance(
    session: AsyncSession, person: Person, state: ChatState, step: str, at: datetime, **data: Any
) -> ChatState:
    state = chat_state.put_state(
        session, state, person.identity.id, state.flow, 0, {**state.data, **data, "step": step}, at
    )
    await session.commit()
    return state


async def finish(session: AsyncSession, state: ChatState) -> None:
    await chat_state.clear_state(session, state)
    await session.commit()
