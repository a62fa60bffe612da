"""The personal pledge: a guided draft, one section per step, then versioned submissions."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import and_, bindparam
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    ChatState,
    Deadline,
    Member,
    Pledge,
    PledgeReview,
    PledgeStatus,
    PledgeVersion,
    ReviewDecision,
)
from bot.read_batch import PreparedRead, Read, ReadBatch, Row
from bot.services import chat_state, people, tallies, updates
from bot.services import deadlines as deadline_rules
from bot.services.campaigns import CampaignInForce
from bot.services.chat_state import StateSeen
from bot.services.errors import Refusal
from bot.services.people import Person
from bot.text import nfc
from bot.write_batch import Prepared, Write, WriteBatch, prepared_insert, prepared_update

FLOW = "pledge"
PAPER_FLOW = "paper_pledge"  # an officer typing in a member's paper form, in the officer's chat
SECTION_MAX = 1000


@dataclass(frozen=True)
class Writer:
    """Who fills the wizard in, and for whom: the member in their own chat, or an officer
    entering a member's paper form (answers kept in the officer's chat state, so the
    member's own draft is never touched)."""

    identity_id: int  # the chat whose state holds the wizard
    owner_id: int  # whose pledge it is
    entered_by: int | None = None  # the officer, for a paper form

    @property
    def flow(self) -> str:
        return FLOW if self.entered_by is None else PAPER_FLOW


def _writer(person: Person) -> Writer:
    assert person.member is not None
    return Writer(person.identity.id, person.member.id)


@dataclass(frozen=True, slots=True)
class PledgeSeen:
    """A pledge as read on the group path (bot.read_batch): plain values, no session,
    written back only behind what the write matches on."""

    id: int
    member_id: int
    campaign_id: int
    status: PledgeStatus
    draft: dict[str, str]
    current_version: int
    first_submitted_at: datetime | None
    late: bool
    review: ReviewDecision | None
    revise_by: date | None

    @classmethod
    def of(cls, row: Row, start: int = 0) -> PledgeSeen | None:
        """From the `_SEEN_COLUMNS` at `start` in `row`; None for an outer join's NULLs."""
        if row[start] is None:
            return None
        return cls(*row[start:start + len(_SEEN_COLUMNS)])


_SEEN_COLUMNS = (
    Pledge.id, Pledge.member_id, Pledge.campaign_id, Pledge.status, Pledge.draft,
    Pledge.current_version, Pledge.first_submitted_at, Pledge.late, Pledge.review,
    Pledge.revise_by,
)
# Either way of reading them: the ORM path's rows, or the group path's values.
AnyPledge = Pledge | PledgeSeen
AnyState = ChatState | StateSeen


@dataclass(frozen=True)
class WizardView:
    """What the member should see now: one section's step, or the review screen."""

    step: int
    total: int
    version: int
    sections: list[dict[str, Any]]
    answers: dict[str, str]
    deadline: Deadline | None
    revising: bool

    @property
    def is_review(self) -> bool:
        return self.step >= self.total

    @property
    def section(self) -> dict[str, Any] | None:
        return None if self.is_review else self.sections[self.step]

    @property
    def answer(self) -> str | None:
        section = self.section
        return self.answers.get(section["key"]) if section else None

    @property
    def missing(self) -> list[dict[str, Any]]:
        return [s for s in self.sections if not self.answers.get(s["key"])]


@dataclass(frozen=True)
class Submitted:
    version: int
    late: bool
    first: bool
    last_day: date | None  # the last day revisions are still taken, when there is a deadline


@dataclass(frozen=True)
class PledgeView:
    """A member's own pledge as /mypledge shows it."""

    status: str  # none | draft | on_time | late
    sections: list[dict[str, Any]]
    answers: dict[str, str]
    version: int
    submitted_at: datetime | None
    deadline: Deadline | None
    has_newer_draft: bool = False
    versions: list[int] = field(default_factory=list)
    entered_by: str | None = None  # the officer who typed in the paper form, by name
    review: ReviewDecision | None = None
    revise_by: date | None = None
    comment: str | None = None  # the officer's comment when the pledge was returned


async def _pledge(session: AsyncSession, member_id: int, campaign_id: int) -> Pledge | None:
    params = {"member_id": member_id, "campaign_id": campaign_id}
    return (await session.exec(_PLEDGE, params=params)).first()


# Built once (bound parameters): the wizard reads it on every step.
_PLEDGE = select(Pledge).where(
    Pledge.member_id == bindparam("member_id"), Pledge.campaign_id == bindparam("campaign_id")
)


async def _current_sections(session: AsyncSession, pledge: Pledge) -> dict[str, str]:
    row = (
        await session.exec(
            select(PledgeVersion).where(
                PledgeVersion.pledge_id == pledge.id,
                PledgeVersion.version == pledge.current_version,
            )
        )
    ).first()
    return dict(row.sections) if row else {}


def _answers(state: AnyState, pledge: AnyPledge) -> dict[str, str]:
    if state.flow == PAPER_FLOW:
        return dict(state.data.get("answers", {}))
    return dict(pledge.draft)


def revision_open(pledge: AnyPledge, deadline: Deadline | None, at: datetime, tz: tzinfo) -> bool:
    """A filed pledge may be revised while the deadline is still ahead, or, once an officer
    returned it, up to the day they set (inclusive, local), even past the deadline."""
    if deadline is None or deadline_rules.is_on_time(deadline, at, tz):
        return True
    return (
        pledge.revise_by is not None
        and pledge.review != ReviewDecision.approved
        and at.astimezone(tz).date() <= pledge.revise_by
    )


def _revise_closed(pledge: AnyPledge, deadline: Deadline | None) -> Refusal:
    return Refusal("pledge/revise_closed", deadline=deadline, revise_by=pledge.revise_by)


def _view(state: AnyState, pledge: AnyPledge, in_force: CampaignInForce) -> WizardView:
    return WizardView(
        step=state.step,
        total=len(in_force.sections()),
        version=state.version,
        sections=in_force.sections(),
        answers=_answers(state, pledge),
        deadline=in_force.pledge_deadline,
        revising=pledge.status == PledgeStatus.submitted,
    )


async def open_wizard(
    session: AsyncSession, person: Person, in_force: CampaignInForce, at: datetime, tz: tzinfo
) -> WizardView:
    """/pledge: resume the saved step, or start (a revision starts from the pledge in force)."""
    return await open_as(session, _writer(person), in_force, at, tz)


async def open_as(
    session: AsyncSession, writer: Writer, in_force: CampaignInForce, at: datetime, tz: tzinfo
) -> WizardView:
    """Open the wizard for `writer`; a paper form is only taken for a pledge not filed yet
    (the caller checked the officer may read and write it)."""
    pledge = await _pledge(session, writer.owner_id, in_force.campaign.id)
    if pledge is not None:
        _check_open(pledge, writer, in_force.pledge_deadline, at, tz)
    if pledge is None:
        pledge = Pledge(member_id=writer.owner_id, campaign_id=in_force.campaign.id, updated_at=at)
        session.add(pledge)
        await session.flush()
    state = await chat_state.get_state(session, writer.identity_id)
    if state is not None and state.flow == writer.flow and state.data.get("pledge_id") == pledge.id:
        state = chat_state.put_state(
            session, state, writer.identity_id, writer.flow, state.step, state.data, at
        )
    else:
        data: dict[str, Any] = {"pledge_id": pledge.id}
        if writer.entered_by is not None:
            data |= {"member_id": writer.owner_id, "answers": {}}
        elif pledge.status == PledgeStatus.submitted and not pledge.draft:
            pledge.draft = await _current_sections(session, pledge)
            session.add(pledge)
        state = chat_state.put_state(session, state, writer.identity_id, writer.flow, 0, data, at)
    await session.commit()
    return _view(state, pledge, in_force)


def _check_open(
    pledge: AnyPledge, writer: Writer, deadline: Deadline | None, at: datetime, tz: tzinfo
) -> None:
    """A filed pledge opens again as a revision while revisions are taken, never for a
    paper form."""
    if pledge.status == PledgeStatus.submitted:
        if writer.entered_by is not None:
            raise Refusal("review/paper_already_filed")
        if not revision_open(pledge, deadline, at, tz):
            raise _revise_closed(pledge, deadline)


async def open_grouped(
    reads: ReadBatch,
    batch: WriteBatch,
    person: Person,
    in_force: CampaignInForce,
    at: datetime,
    tz: tzinfo,
    mark: updates.UpdateMark | None,
) -> WizardView | None:
    """`open_wizard` in one of the group commits (as `answer_grouped`), for a pledge
    that exists: a new one is created under the lock (its id goes into the chat's state).
    None when this path does not apply or lost a race."""
    writer = _writer(person)
    states, found = await reads.fetch(
        chat_state.seen_read(writer.identity_id),
        _opening_read().bind({"member_id": writer.owner_id, "campaign_id": in_force.campaign.id}),
    )
    pledge = PledgeSeen.of(found[0]) if found else None
    if pledge is None:
        return None
    _check_open(pledge, writer, in_force.pledge_deadline, at, tz)
    state = StateSeen.of(states[0]) if states else None
    draft = dict(pledge.draft)
    if state is not None and state.flow == writer.flow and state.data.get("pledge_id") == pledge.id:
        step = state.step
        writes = [chat_state.put_write(state, writer.identity_id, writer.flow, step,
                                       state.data, at)]
    else:
        step = 0
        writes = [chat_state.put_write(state, writer.identity_id, writer.flow, step,
                                       {"pledge_id": pledge.id}, at)]
        if pledge.status == PledgeStatus.submitted and not pledge.draft:
            # A revision starts from the version in force (read with the pledge).
            draft = dict(found[0][len(_SEEN_COLUMNS)] or {})
            writes.append(_draft_write(pledge, draft, at))
    if not await _store_grouped(batch, mark, person, writes):
        return None
    return WizardView(
        step=step,
        total=len(in_force.sections()),
        version=(state.version if state is not None else 0) + 1,
        sections=in_force.sections(),
        answers=draft,
        deadline=in_force.pledge_deadline,
        revising=pledge.status == PledgeStatus.submitted,
    )


@functools.cache
def _opening_read() -> PreparedRead:
    """The member's pledge for the campaign, with the sections of its version in force."""
    return PreparedRead.of(
        select(*_SEEN_COLUMNS, PledgeVersion.sections)
        .outerjoin(
            PledgeVersion,
            and_(
                col(PledgeVersion.pledge_id) == Pledge.id,
                col(PledgeVersion.version) == Pledge.current_version,
            ),
        )
        .where(
            Pledge.member_id == bindparam("member_id"),
            Pledge.campaign_id == bindparam("campaign_id"),
        )
    )


async def _active(
    session: AsyncSession, writer: Writer, in_force: CampaignInForce, version: int | None
) -> tuple[ChatState, Pledge]:
    """The wizard this chat is in; a button from another step or another pledge is stale."""
    state = await chat_state.get_state(session, writer.identity_id)
    if state is None or state.flow != writer.flow:
        raise Refusal("common/stale_button" if version is not None else "pledge/not_in_wizard")
    if version is not None and version != state.version:
        raise Refusal("common/stale_button")
    pledge = await session.get(Pledge, state.data.get("pledge_id"))
    if not _wizard_pledge(pledge, writer, in_force):
        await chat_state.clear_state(session, state)
        await session.commit()
        raise Refusal("common/stale_button")
    return state, pledge


async def wizard_now(
    session: AsyncSession, person: Person, in_force: CampaignInForce
) -> WizardView | None:
    """Where the member's own wizard stands, changing nothing; None outside it."""
    writer = _writer(person)
    state = await chat_state.get_state(session, writer.identity_id)
    if state is None or state.flow != writer.flow:
        return None
    pledge = await session.get(Pledge, state.data.get("pledge_id"))
    if not _wizard_pledge(pledge, writer, in_force):
        return None
    return _view(state, pledge, in_force)


def _wizard_pledge(pledge: Pledge | None, writer: Writer, in_force: CampaignInForce) -> bool:
    """Whether the pledge a chat's wizard names is the writer's, for the campaign in force."""
    return (
        pledge is not None
        and pledge.member_id == writer.owner_id
        and pledge.campaign_id == in_force.campaign.id
    )


def validate_section_text(text: str) -> str:
    """Trimmed NFC text; with no letter or digit at all ("...", a zero-width space) it is empty."""
    cleaned = nfc(text).strip()
    if not any(ch.isalnum() for ch in cleaned):
        raise Refusal("pledge/empty")
    if len(cleaned) > SECTION_MAX:
        raise Refusal("pledge/too_long", length=len(cleaned), limit=SECTION_MAX)
    return cleaned


async def answer(
    session: AsyncSession, person: Person, in_force: CampaignInForce, text: str, at: datetime
) -> WizardView:
    """Save the typed text as the current section's answer and move to the next step."""
    return await answer_as(session, _writer(person), in_force, text, at)


async def answer_as(
    session: AsyncSession, writer: Writer, in_force: CampaignInForce, text: str, at: datetime
) -> WizardView:
    state, pledge = await _active(session, writer, in_force, None)
    view = _view(state, pledge, in_force)
    if view.is_review:
        raise Refusal("pledge/use_buttons_on_review")
    cleaned = validate_section_text(text)
    key = view.sections[state.step]["key"]
    data = dict(state.data)
    if writer.entered_by is not None:
        data["answers"] = {**data.get("answers", {}), key: cleaned}
    else:
        pledge.draft = {**pledge.draft, key: cleaned}
        pledge.updated_at = at
        session.add(pledge)
    state = chat_state.put_state(
        session, state, writer.identity_id, writer.flow, state.step + 1, data, at
    )
    await session.commit()
    return _view(state, pledge, in_force)


async def answer_grouped(
    reads: ReadBatch,
    batch: WriteBatch,
    person: Person,
    in_force: CampaignInForce,
    text: str,
    at: datetime,
    mark: updates.UpdateMark | None,
) -> WizardView | None:
    """`answer` for a member's own wizard, read in one of the grouped reads
    (bot.read_batch) and written with other chats' answers in one of its group commits
    (bot.write_batch).

    None when this path does not apply or lost a race: the chat is in no wizard of its own,
    the wizard's pledge is not this campaign's, or the chat's state (or who is writing)
    moved on after it was read. The caller then runs `answer` on the ORM path, which
    decides afresh.
    """
    found = await _own_wizard(reads, _writer(person), in_force, None)
    if found is None:
        return None
    state, pledge, _ = found
    view = _view(state, pledge, in_force)
    if view.is_review:
        raise Refusal("pledge/use_buttons_on_review")
    cleaned = validate_section_text(text)
    draft = {**pledge.draft, view.sections[state.step]["key"]: cleaned}
    writes = [
        chat_state.put_write(state, state.identity_id, state.flow, state.step + 1,
                             state.data, at),
        _draft_write(pledge, draft, at),
    ]
    if not await _store_grouped(batch, mark, person, writes):
        return None
    return replace(view, step=state.step + 1, version=state.version + 1, answers=draft)


async def _own_wizard(
    reads: ReadBatch, writer: Writer, in_force: CampaignInForce, version: int | None,
    *also: Read,
) -> tuple[StateSeen, PledgeSeen, list[list[Row]]] | None:
    """`_active` for the group path, changing nothing (with the rows of `also`, read in the
    same snapshot): where `_active` would clear a state whose pledge is not this one's,
    this returns None, and the ORM path then does. None too for typed text (`version`
    None) in no wizard: the router's."""
    wizard, *rest = await reads.fetch(_wizard_read().bind({"identity_id": writer.identity_id}),
                                      *also)
    state = StateSeen.of(wizard[0]) if wizard else None
    if state is None or state.flow != writer.flow:
        if version is None:
            return None
        raise Refusal("common/stale_button")
    if version is not None and version != state.version:
        raise Refusal("common/stale_button")
    pledge = PledgeSeen.of(wizard[0], len(chat_state.SEEN_COLUMNS))
    if pledge is None or pledge.member_id != writer.owner_id:
        return None
    if pledge.campaign_id != in_force.campaign.id:
        return None
    return state, pledge, rest


@functools.cache
def _wizard_read() -> PreparedRead:
    """The chat's state and the pledge its wizard names, in one statement."""
    return PreparedRead.of(
        select(*chat_state.SEEN_COLUMNS, *_SEEN_COLUMNS)
        .select_from(ChatState)
        .outerjoin(Pledge, col(Pledge.id) == ChatState.data["pledge_id"].as_integer())
        .where(ChatState.identity_id == bindparam("identity_id"))
    )


async def _store_grouped(
    batch: WriteBatch,
    mark: updates.UpdateMark | None,
    person: Person,
    writes: list[Write],
) -> bool:
    """Hand a turn's writes to the group commit, after its done mark and behind guards that
    who is writing is as read; whether they went in."""
    writes = [*people.unchanged(person), *writes]
    if mark is not None:
        writes = [updates.done_write(mark), *writes]
    return updates.grouped(mark, await batch.apply(writes))


def _draft_write(pledge: AnyPledge, draft: dict[str, str], at: datetime) -> Write:
    values = {"seen_id": pledge.id, "seen_member_id": pledge.member_id, "new_draft": draft,
              "new_updated_at": at}
    return _draft_statement().bind(values)


@functools.cache
def _draft_statement() -> Prepared:
    return prepared_update(
        Pledge.__table__, match=("id", "member_id"), assign=("draft", "updated_at")
    )


async def move(
    session: AsyncSession,
    person: Person,
    in_force: CampaignInForce,
    version: int,
    delta: int,
    at: datetime,
) -> WizardView:
    """Back (-1) or skip (+1) from a button that belongs to the current step."""
    return await move_as(session, _writer(person), in_force, version, delta, at)


async def move_as(
    session: AsyncSession,
    writer: Writer,
    in_force: CampaignInForce,
    version: int,
    delta: int,
    at: datetime,
) -> WizardView:
    state, pledge = await _active(session, writer, in_force, version)
    total = len(in_force.sections())
    step = min(max(state.step + delta, 0), total)
    state = chat_state.put_state(
        session, state, writer.identity_id, writer.flow, step, state.data, at
    )
    await session.commit()
    return _view(state, pledge, in_force)


async def move_grouped(
    reads: ReadBatch,
    batch: WriteBatch,
    person: Person,
    in_force: CampaignInForce,
    version: int,
    delta: int,
    at: datetime,
    mark: updates.UpdateMark | None,
) -> WizardView | None:
    """`move` for a member's own wizard in one of the group commits (as
    `answer_grouped`); None when this path does not apply or lost a race."""
    found = await _own_wizard(reads, _writer(person), in_force, version)
    if found is None:
        return None
    state, pledge, _ = found
    view = _view(state, pledge, in_force)
    step = min(max(state.step + delta, 0), view.total)
    writes = [chat_state.put_write(state, state.identity_id, state.flow, step, state.data, at)]
    if not await _store_grouped(batch, mark, person, writes):
        return None
    return replace(view, step=step, version=state.version + 1)


async def cancel(session: AsyncSession, person: Person) -> bool:
    """Leave the wizard; the draft stays saved for next time. False if nothing to cancel."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None:
        return False
    await chat_state.clear_state(session, state)
    await session.commit()
    return True


async def submit(
    session: AsyncSession,
    person: Person,
    in_force: CampaignInForce,
    version: int,
    at: datetime,
    tz: tzinfo,
) -> Submitted:
    """File the draft as a new version; the first filing after the deadline is marked late."""
    return await submit_as(session, _writer(person), in_force, version, at, tz)


async def submit_as(
    session: AsyncSession,
    writer: Writer,
    in_force: CampaignInForce,
    version: int,
    at: datetime,
    tz: tzinfo,
) -> Submitted:
    """A revision clears the officer's decision: the new version awaits review again."""
    state, pledge = await _active(session, writer, in_force, version)
    filing = _decide_filing(writer, pledge, _view(state, pledge, in_force), in_force, at, tz)
    async with tallies.tracking(session, pledge.member_id):
        pledge.current_version += 1
        session.add(
            PledgeVersion(
                pledge_id=pledge.id,
                version=pledge.current_version,
                sections=filing.sections,
                submitted_at=at,
                late=not filing.on_time,
                entered_by_member_id=writer.entered_by,
            )
        )
        if filing.first:
            pledge.first_submitted_at = at
            pledge.late = not filing.on_time
        pledge.status = PledgeStatus.submitted
        pledge.review = None
        if writer.entered_by is None:
            pledge.draft = {}
        pledge.updated_at = at
        session.add(pledge)
    await chat_state.clear_state(session, state)
    await session.commit()
    return Submitted(
        version=pledge.current_version,
        late=pledge.late,
        first=filing.first,
        last_day=_last_revision_day(pledge.revise_by, in_force.pledge_deadline),
    )


@dataclass(frozen=True)
class _Filing:
    """Filing the draft, as decided from the pledge as read (both write paths apply it)."""

    sections: dict[str, str]
    on_time: bool
    first: bool  # not filed before: this filing sets the first date and the late flag


def _decide_filing(
    writer: Writer,
    pledge: AnyPledge,
    view: WizardView,
    in_force: CampaignInForce,
    at: datetime,
    tz: tzinfo,
) -> _Filing:
    if view.missing:
        raise Refusal("pledge/missing_sections", missing=view.missing)
    deadline = in_force.pledge_deadline
    on_time = deadline is None or deadline_rules.is_on_time(deadline, at, tz)
    first = pledge.status != PledgeStatus.submitted
    if not first and writer.entered_by is not None:
        raise Refusal("review/paper_already_filed")
    if not first and not revision_open(pledge, deadline, at, tz):
        raise _revise_closed(pledge, deadline)
    return _Filing(sections=view.answers, on_time=on_time, first=first)


async def submit_grouped(
    reads: ReadBatch,
    batch: WriteBatch,
    person: Person,
    in_force: CampaignInForce,
    version: int,
    at: datetime,
    tz: tzinfo,
    mark: updates.UpdateMark | None,
) -> Submitted | None:
    """`submit` for a member's own wizard, read on `session` (a reader) and written in one
    of the group commits (bot.write_batch), as `answer_grouped` does.

    The stored counts change by increments computed from the member's contribution as
    read, behind guards that what it was computed from is unchanged: the chat state's
    version, the pledge's version, status and review, the member's unit and standing. None
    when this path does not apply or lost a race; the caller then runs `submit`.
    """
    writer = _writer(person)
    found = await _own_wizard(reads, writer, in_force, version,
                              *tallies.snapshot_reads(writer.owner_id))
    if found is None:
        return None
    state, pledge, (members, submitted) = found
    filing = _decide_filing(writer, pledge, _view(state, pledge, in_force), in_force, at, tz)
    before = tallies.snapshot_of(members, submitted).get(pledge.member_id)
    year = in_force.campaign.year
    late = (not filing.on_time) if filing.first else pledge.late
    was = None if filing.first else (year, _timing(pledge.late), _approved(pledge))
    after = tallies.after_filing(before, was, (year, _timing(late), False)) if before else None
    if before is None or after is None:
        return None
    writes = [
        chat_state.clear_write(state),
        _filed_write(pledge, filing, late, at),
        _version_write(pledge, filing, at),
        *tallies.grouped_writes(pledge.member_id, before, after),
    ]
    if not await _store_grouped(batch, mark, person, writes):
        return None
    return Submitted(
        version=pledge.current_version + 1,
        late=late,
        first=filing.first,
        last_day=_last_revision_day(pledge.revise_by, in_force.pledge_deadline),
    )


def _timing(late: bool) -> str:
    return "late" if late else "on_time"


def _approved(pledge: AnyPledge) -> bool:
    return pledge.review == ReviewDecision.approved


def _filed_write(pledge: PledgeSeen, filing: _Filing, late: bool, at: datetime) -> Write:
    values = {
        "seen_id": pledge.id,
        "seen_current_version": pledge.current_version,
        "seen_status": pledge.status,
        "seen_review": pledge.review,
        "new_current_version": pledge.current_version + 1,
        "new_status": PledgeStatus.submitted,
        "new_review": None,
        "new_draft": {},
        "new_first_submitted_at": at if filing.first else pledge.first_submitted_at,
        "new_late": late,
        "new_updated_at": at,
    }
    return _filed_statement().bind(values)


@functools.cache
def _filed_statement() -> Prepared:
    return prepared_update(
        Pledge.__table__,
        match=("id", "current_version", "status", "review"),
        assign=("current_version", "status", "review", "draft", "first_submitted_at", "late",
                "updated_at"),
    )


def _version_write(pledge: PledgeSeen, filing: _Filing, at: datetime) -> Write:
    values = {
        "new_pledge_id": pledge.id,
        "new_version": pledge.current_version + 1,
        "new_sections": filing.sections,
        "new_submitted_at": at,
        "new_late": not filing.on_time,
        "new_entered_by_member_id": None,
    }
    return _version_statement().bind(values)


@functools.cache
def _version_statement() -> Prepared:
    return prepared_insert(PledgeVersion.__table__, _VERSION_COLUMNS)


_VERSION_COLUMNS = (
    "pledge_id", "version", "sections", "submitted_at", "late", "entered_by_member_id"
)


def _last_revision_day(revise_by: date | None, deadline: Deadline | None) -> date | None:
    """After a filing (which clears the officer's decision): the last day a revision is
    taken, the deadline's, or the later revise-by day an officer set when returning it."""
    last = deadline_rules.last_day(deadline) if deadline else None
    if last is not None and revise_by is not None:
        return max(last, revise_by)
    return last


async def my_pledge(session: AsyncSession, person: Person, in_force: CampaignInForce) -> PledgeView:
    """The member's own pledge, and nobody else's: it is looked up by their own member id."""
    assert person.member is not None
    pledge = await _pledge(session, person.member.id, in_force.campaign.id)
    sections = in_force.sections()
    deadline = in_force.pledge_deadline
    if pledge is None:
        return PledgeView("none", sections, {}, 0, None, deadline)
    if pledge.status == PledgeStatus.draft:
        return PledgeView("draft", sections, dict(pledge.draft), 0, None, deadline)
    versions = (
        await session.exec(
            select(PledgeVersion.version)
            .where(PledgeVersion.pledge_id == pledge.id)
            .order_by(col(PledgeVersion.version))
        )
    ).all()
    entered_by = (
        await session.exec(
            select(Member.full_name)
            .join(PledgeVersion, col(PledgeVersion.entered_by_member_id) == Member.id)
            .where(
                PledgeVersion.pledge_id == pledge.id,
                PledgeVersion.version == pledge.current_version,
            )
        )
    ).first()
    comment = None
    if pledge.review == ReviewDecision.returned:
        comment = (
            await session.exec(
                select(PledgeReview.comment)
                .where(PledgeReview.pledge_id == pledge.id)
                .order_by(col(PledgeReview.id).desc())
            )
        ).first()
    return PledgeView(
        status="late" if pledge.late else "on_time",
        sections=sections,
        answers=await _current_sections(session, pledge),
        version=pledge.current_version,
        submitted_at=pledge.first_submitted_at,
        deadline=deadline,
        has_newer_draft=bool(pledge.draft),
        versions=list(versions),
        entered_by=entered_by,
        review=pledge.review,
        revise_by=pledge.revise_by if pledge.review == ReviewDecision.returned else None,
        comment=comment,
    )
