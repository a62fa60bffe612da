"""An officer's roster sent in the chat: which unit, a preview, then confirm or cancel.

The file itself stays on Telegram; the chat state keeps its file id, the unit and a version,
so a stale or forged button is refused and a restart between preview and confirm loses
nothing. Authorization is checked again on every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import ChatState, Unit
from bot.rosterfile import ParsedRoster, is_spreadsheet_name
from bot.services import chat_state, roster
from bot.services.authorization import Action, may, units_for
from bot.services.errors import Refusal
from bot.services.people import Person

FLOW = "roster"
MAX_BYTES = 5 * 1024 * 1024
MAX_MB = MAX_BYTES // (1024 * 1024)
STEP_UNIT, STEP_CONFIRM = 0, 1


@dataclass(frozen=True)
class Upload:
    file_id: str
    filename: str
    size: int | None = None


def bad_file(reason: str) -> Refusal:
    return Refusal("roster/bad_file", reason=reason, limit_mb=MAX_MB)


async def start(
    session: AsyncSession, person: Person, upload: Upload, at: datetime
) -> tuple[list[Unit], int]:
    """A document arrived: refuse anyone without the role and anything but a spreadsheet of
    at most 5 MB; otherwise remember it. Returns the officer's units and the state version
    (with one unit the flow is already at the confirm step)."""
    units = await units_for(session, person.member, Action.manage_roster)
    if not units:
        raise Refusal("roster/not_allowed")
    if not is_spreadsheet_name(upload.filename):
        raise bad_file("not_spreadsheet")
    if upload.size is not None and upload.size > MAX_BYTES:
        raise bad_file("too_big")
    state = await chat_state.get_state(session, person.identity.id)
    data = {"file_id": upload.file_id, "filename": upload.filename}
    if len(units) == 1:
        step, data["unit_id"] = STEP_CONFIRM, units[0].id
    else:
        step, data["unit_ids"] = STEP_UNIT, [unit.id for unit in units]
    state = chat_state.put_state(session, state, person.identity.id, FLOW, step, data, at)
    await session.commit()
    return units, state.version


async def _state(
    session: AsyncSession, person: Person, step: int | None, version: int
) -> ChatState:
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW or state.version != version:
        raise Refusal("common/stale_button")
    if step is not None and state.step != step:
        raise Refusal("common/stale_button")
    return state


def _upload(state: ChatState) -> Upload:
    return Upload(state.data["file_id"], state.data["filename"])


async def _allowed_unit(session: AsyncSession, person: Person, unit_id: int) -> Unit:
    unit = await session.get(Unit, unit_id)
    if unit is None or not await may(session, person.member, Action.manage_roster, unit):
        raise Refusal("roster/not_allowed")
    return unit


async def choose_unit(
    session: AsyncSession, person: Person, version: int, unit_id: int, at: datetime
) -> tuple[Upload, Unit, int]:
    """The officer picked the unit the file is for (one offered to them, still theirs)."""
    state = await _state(session, person, STEP_UNIT, version)
    if unit_id not in state.data.get("unit_ids", []):
        raise Refusal("common/stale_button")
    unit = await _allowed_unit(session, person, unit_id)
    data = {**state.data, "unit_id": unit.id}
    state = chat_state.put_state(session, state, person.identity.id, FLOW, STEP_CONFIRM, data, at)
    await session.commit()
    return _upload(state), unit, state.version


async def staged(session: AsyncSession, person: Person, version: int) -> tuple[Upload, Unit]:
    """The file and unit a confirm button stands for (the transaction ends here)."""
    state = await _state(session, person, STEP_CONFIRM, version)
    unit = await _allowed_unit(session, person, state.data["unit_id"])
    upload = _upload(state)
    await session.commit()
    return upload, unit


async def confirm(
    session: AsyncSession,
    person: Person,
    version: int,
    parsed: ParsedRoster,
    at: datetime,
) -> tuple[roster.Plan, Unit]:
    """Import, all or nothing, in one transaction with the state check (a second press of
    the same button finds the flow gone and is refused)."""
    state = await _state(session, person, STEP_CONFIRM, version)
    unit = await _allowed_unit(session, person, state.data["unit_id"])
    assert person.member is not None
    planned = await roster.plan(session, unit, parsed)
    await chat_state.clear_state(session, state)
    if not planned.ok:  # the database changed since the preview
        await session.commit()
        return planned, unit
    return await roster.apply(session, planned, at, by_member_id=person.member.id), unit


async def cancel(session: AsyncSession, person: Person, version: int) -> Upload:
    """Cancel at either step: nothing is imported."""
    state = await _state(session, person, None, version)
    upload = _upload(state)
    await chat_state.clear_state(session, state)
    await session.commit()
    return upload


async def drop(session: AsyncSession, person: Person) -> None:
    """The file could not be read: forget it."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is not None and state.flow == FLOW:
        await chat_state.clear_state(session, state)
    await session.commit()
