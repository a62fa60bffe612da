"""Officers' review of pledges, paper pledges typed in for a member, and the printable form.

Who may do what is asked of bot/services/authorization.py every time: the lists of a
unit need `view_pending` there; opening, deciding on, printing or typing in a pledge needs
`may_read_pledge` (officers and leaders of the member's own CĐCS). A decision is recorded
once per version, together with the stored counts and the member's notice, in one
transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import exists, not_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    Campaign,
    ChatIdentity,
    Member,
    Pledge,
    PledgeReview,
    PledgeStatus,
    PledgeVersion,
    ReviewDecision,
    Unit,
)
from bot.services import campaigns, chat_state, pledges, tallies
from bot.services.authorization import Action, grassroots_of, may, may_read_pledge, units_for
from bot.services.campaigns import CampaignInForce
from bot.services.errors import Refusal
from bot.services.outbox import Queued, enqueue
from bot.services.units import in_subtree
from bot.text import given_name_sort_key, nfc, search_key

FLOW_RETURN = "review_return"  # the officer types the comment, then picks the date
FLOW_SEARCH = "paper_search"  # the officer types a name to find whose paper form to enter
AWAITING_PAGE = 8  # pledges a page, each with its own button
NAMES_PAGE = 40  # names a page of the not-joined list
COMMENT_MAX = 1000
REVISE_DAYS = (3, 7, 14)
REVISE_MAX_DAYS = 90
SEARCH_SHOWN = 10


# -- the lists behind /pending -------------------------------------------------------------


@dataclass(frozen=True)
class Awaiting:
    """A filed pledge with no decision on its version in force."""

    pledge_id: int
    member: Member
    unit: Unit
    version: int
    late: bool
    submitted_at: datetime | None
    readable: bool = False  # the viewer may open its text (set for the page shown)


@dataclass
class Lists:
    unit: Unit
    year: int
    not_joined: list[tuple[Member, Unit]]
    awaiting: list[Awaiting]


async def _unit_for_lists(session: AsyncSession, viewer: Member | None, unit_id: int) -> Unit:
    unit = await session.get(Unit, unit_id)
    if unit is None or not await may(session, viewer, Action.view_pending, unit):
        raise Refusal("review/unit_not_allowed")
    return unit


async def lists_for(
    session: AsyncSession, viewer: Member | None, unit_id: int, today: date
) -> Lists:
    """Who has not joined the bot and which pledges await review, in a unit's subtree."""
    unit = await _unit_for_lists(session, viewer, unit_id)
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    if in_force is None:
        raise Refusal("topic/none", unit=unit)
    year = in_force.campaign.year
    has_identity = exists().where(ChatIdentity.member_id == Member.id)
    joined_rows = await session.exec(
        select(Member, Unit)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .where(in_subtree(unit), col(Member.active).is_(True), not_(has_identity))
    )
    not_joined = sorted(joined_rows.all(), key=lambda row: given_name_sort_key(row[0].full_name))
    pledge_rows = await session.exec(
        select(Pledge, Member, Unit)
        .join(Member, col(Member.id) == Pledge.member_id)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
        .where(
            in_subtree(unit),
            col(Member.active).is_(True),
            Pledge.status == PledgeStatus.submitted,
            col(Pledge.review).is_(None),
            Campaign.year == year,
        )
        .order_by(col(Pledge.updated_at), col(Pledge.id))
    )
    awaiting = [
        Awaiting(p.id, m, u, p.current_version, p.late, p.updated_at)
        for p, m, u in pledge_rows.all()
    ]
    return Lists(unit=unit, year=year, not_joined=list(not_joined), awaiting=awaiting)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    page: int
    pages: int
    total: int
    first_index: int  # 1-based number of the first item shown


def page_of(items: list[Any], page: int, size: int) -> Page:
    pages = max(1, -(-len(items) // size))
    page = min(max(page, 0), pages - 1)
    start = page * size
    return Page(items[start : start + size], page, pages, len(items), start + 1)


async def awaiting_page(
    session: AsyncSession, viewer: Member | None, unit_id: int, page: int, today: date
) -> tuple[Lists, Page]:
    """A page of the awaiting-review list; each row says whether the viewer may open it."""
    lists = await lists_for(session, viewer, unit_id, today)
    shown = page_of(lists.awaiting, page, AWAITING_PAGE)
    items = []
    for row in shown.items:
        readable = await _may_review(session, viewer, row.member)
        items.append(
            Awaiting(
                row.pledge_id,
                row.member,
                row.unit,
                row.version,
                row.late,
                row.submitted_at,
                readable,
            )
        )
    return lists, Page(items, shown.page, shown.pages, shown.total, shown.first_index)


async def _may_review(session: AsyncSession, viewer: Member | None, owner: Member) -> bool:
    """Officers of the owner's own CĐCS, never the owner themself."""
    if viewer is None or viewer.id == owner.id:
        return False
    return await may_read_pledge(session, viewer, owner)


# -- the review screen and decisions -------------------------------------------------------


@dataclass(frozen=True)
class PastDecision:
    version: int
    decision: ReviewDecision
    comment: str | None
    revise_by: date | None
    reviewer: str
    decided_at: datetime | None


@dataclass(frozen=True)
class ReviewScreen:
    pledge_id: int
    member: Member
    unit: Unit
    grassroots: Unit
    campaign: Campaign
    version: int
    sections: list[dict[str, Any]]
    answers: dict[str, str]
    submitted_at: datetime | None
    late: bool  # the first filing was late
    version_late: bool  # this version came in after the deadline
    entered_by: str | None
    review: ReviewDecision | None
    revise_by: date | None
    history: list[PastDecision] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        return any(d.version == self.version for d in self.history)


async def _pledge_and_owner(
    session: AsyncSession, pledge_id: int, lock: bool = False
) -> tuple[Pledge, Member]:
    query = select(Pledge).where(Pledge.id == pledge_id)
    if lock:
        query = query.with_for_update()
    pledge = (await session.exec(query)).first()
    owner = await session.get(Member, pledge.member_id) if pledge is not None else None
    if pledge is None or owner is None:
        raise Refusal("review/not_found")
    return pledge, owner


async def _reviewable(
    session: AsyncSession, viewer: Member | None, pledge_id: int, lock: bool = False
) -> tuple[Pledge, Member]:
    """The pledge, if the viewer may review it; a forged id of another unit's is refused."""
    pledge, owner = await _pledge_and_owner(session, pledge_id, lock)
    if viewer is not None and viewer.id == owner.id:
        raise Refusal("review/own_pledge")
    if not await _may_review(session, viewer, owner):
        raise Refusal("review/not_allowed")
    if pledge.status != PledgeStatus.submitted:
        raise Refusal("review/not_submitted", member=owner)
    return pledge, owner


async def _version(session: AsyncSession, pledge: Pledge) -> PledgeVersion:
    row = (
        await session.exec(
            select(PledgeVersion).where(
                PledgeVersion.pledge_id == pledge.id,
                PledgeVersion.version == pledge.current_version,
            )
        )
    ).first()
    assert row is not None, "a submitted pledge has its version"
    return row


async def _history(session: AsyncSession, pledge_id: int) -> list[PastDecision]:
    rows = await session.exec(
        select(PledgeReview, Member.full_name)
        .join(Member, col(Member.id) == PledgeReview.reviewer_member_id)
        .where(PledgeReview.pledge_id == pledge_id)
        .order_by(col(PledgeReview.id))
    )
    return [
        PastDecision(r.version, r.decision, r.comment, r.revise_by, name, r.decided_at)
        for r, name in rows.all()
    ]


async def screen(session: AsyncSession, viewer: Member | None, pledge_id: int) -> ReviewScreen:
    """What the officer sees when opening a pledge to review it."""
    pledge, owner = await _reviewable(session, viewer, pledge_id)
    version = await _version(session, pledge)
    unit = await session.get(Unit, owner.unit_id)
    campaign = await session.get(Campaign, pledge.campaign_id)
    assert unit is not None and campaign is not None
    entered_by = None
    if version.entered_by_member_id is not None:
        officer = await session.get(Member, version.entered_by_member_id)
        entered_by = officer.full_name if officer else None
    return ReviewScreen(
        pledge_id=pledge.id,
        member=owner,
        unit=unit,
        grassroots=await grassroots_of(session, unit),
        campaign=campaign,
        version=pledge.current_version,
        sections=campaign.pledge_sections,
        answers=dict(version.sections),
        submitted_at=version.submitted_at,
        late=pledge.late,
        version_late=version.late,
        entered_by=entered_by,
        review=pledge.review,
        revise_by=pledge.revise_by,
        history=await _history(session, pledge.id),
    )


@dataclass(frozen=True)
class ReviewNotice:
    """What the member is told about a decision (rendered by the caller, in their language)."""

    decision: ReviewDecision
    member_name: str
    reviewer_name: str
    version: int
    comment: str | None
    revise_by: date | None


# locale, notice -> (text, reply_markup as Bot API JSON or None)
Compose = Callable[[str, ReviewNotice], tuple[str, dict[str, Any] | None]]


@dataclass(frozen=True)
class Decided:
    review_id: int
    decision: ReviewDecision
    member: Member
    version: int
    revise_by: date | None
    notified: bool  # a notice was queued (False: the member is not on the bot)


async def _decide(
    session: AsyncSession,
    viewer: Member,
    pledge_id: int,
    version: int,
    decision: ReviewDecision,
    comment: str | None,
    revise_by: date | None,
    at: datetime,
    compose: Compose,
) -> Decided:
    pledge, owner = await _reviewable(session, viewer, pledge_id, lock=True)
    if pledge.current_version != version:
        raise Refusal("review/version_changed", member=owner, version=pledge.current_version)
    earlier = (
        await session.exec(
            select(PledgeReview, Member.full_name)
            .join(Member, col(Member.id) == PledgeReview.reviewer_member_id)
            .where(PledgeReview.pledge_id == pledge.id, PledgeReview.version == version)
        )
    ).first()
    if earlier is not None:
        row, reviewer = earlier
        raise Refusal(
            "review/already_decided",
            member=owner,
            decision=row.decision.value,
            reviewer=reviewer,
            decided_at=row.decided_at,
        )
    async with tallies.tracking(session, owner.id):
        pledge.review = decision
        pledge.revise_by = revise_by
        pledge.updated_at = at
        session.add(pledge)
        record = PledgeReview(
            pledge_id=pledge.id,
            version=version,
            decision=decision,
            comment=comment,
            revise_by=revise_by,
            reviewer_member_id=viewer.id,
            decided_at=at,
        )
        session.add(record)
    await session.flush()
    assert record.id is not None
    identity = (
        await session.exec(
            select(ChatIdentity).where(
                ChatIdentity.member_id == owner.id, col(ChatIdentity.blocked_at).is_(None)
            )
        )
    ).first()
    if identity is not None:
        notice = ReviewNotice(
            decision, owner.full_name, viewer.full_name, version, comment, revise_by
        )
        text, markup = compose(identity.locale or "", notice)
        await enqueue(
            session,
            [Queued(f"review:{record.id}", "review", identity.id, identity.chat_id, text, markup)],
            at,
        )
    return Decided(record.id, decision, owner, version, revise_by, identity is not None)


async def approve(
    session: AsyncSession,
    viewer: Member,
    pledge_id: int,
    version: int,
    at: datetime,
    compose: Compose,
) -> Decided:
    decided = await _decide(
        session, viewer, pledge_id, version, ReviewDecision.approved, None, None, at, compose
    )
    await session.commit()
    return decided


async def start_return(
    session: AsyncSession,
    viewer: Member,
    identity_id: int,
    pledge_id: int,
    version: int,
    at: datetime,
) -> Member:
    """Return: first the comment, typed next. Checked now, and again when it is recorded."""
    pledge, owner = await _reviewable(session, viewer, pledge_id)
    if pledge.current_version != version:
        raise Refusal("review/version_changed", member=owner, version=pledge.current_version)
    state = await chat_state.get_state(session, identity_id)
    chat_state.put_state(
        session,
        state,
        identity_id,
        FLOW_RETURN,
        0,
        {"pledge_id": pledge_id, "version": version},
        at,
    )
    await session.commit()
    return owner


@dataclass(frozen=True)
class AskDate:
    state_version: int
    member: Member
    choices: tuple[int, ...]


async def return_comment(
    session: AsyncSession, viewer: Member, identity_id: int, text: str, at: datetime
) -> AskDate:
    state = await chat_state.get_state(session, identity_id)
    if state is None or state.flow != FLOW_RETURN:
        raise Refusal("common/stale_button")
    if state.step != 0:
        raise Refusal("review/pick_date")
    comment = nfc(text).strip()
    if not any(ch.isalnum() for ch in comment):
        raise Refusal("review/comment_empty")
    if len(comment) > COMMENT_MAX:
        raise Refusal("review/comment_too_long", length=len(comment), limit=COMMENT_MAX)
    _, owner = await _reviewable(session, viewer, state.data["pledge_id"])
    state = chat_state.put_state(
        session, state, identity_id, FLOW_RETURN, 1, {**state.data, "comment": comment}, at
    )
    await session.commit()
    return AskDate(state.version, owner, REVISE_DAYS)


async def return_by(
    session: AsyncSession,
    viewer: Member,
    identity_id: int,
    day: date | None,
    state_version: int | None,
    at: datetime,
    tz: tzinfo,
    compose: Compose,
) -> Decided:
    """The date chosen (a button carries the state version, typed text does not)."""
    state = await chat_state.get_state(session, identity_id)
    if state is None or state.flow != FLOW_RETURN or state.step != 1:
        raise Refusal("common/stale_button")
    if state_version is not None and state_version != state.version:
        raise Refusal("common/stale_button")
    today = at.astimezone(tz).date()
    if day is None:
        raise Refusal("review/bad_date")
    if day < today:
        raise Refusal("review/date_past", day=day, today=today)
    if day > today + timedelta(days=REVISE_MAX_DAYS):
        raise Refusal("review/date_too_far", day=day, limit=REVISE_MAX_DAYS)
    try:
        decided = await _decide(
            session,
            viewer,
            state.data["pledge_id"],
            state.data["version"],
            ReviewDecision.returned,
            state.data["comment"],
            day,
            at,
            compose,
        )
    except Refusal:
        # The pledge changed or someone decided meanwhile: this return cannot go on.
        await session.rollback()
        await _leave_return_flow(session, identity_id)
        await session.commit()
        raise
    await chat_state.clear_state(session, state)
    await session.commit()
    return decided


async def _leave_return_flow(session: AsyncSession, identity_id: int) -> None:
    state = await chat_state.get_state(session, identity_id)
    if state is not None and state.flow == FLOW_RETURN:
        await chat_state.clear_state(session, state)


# -- paper pledges -------------------------------------------------------------------------


async def start_search(
    session: AsyncSession, viewer: Member | None, identity_id: int, at: datetime
) -> None:
    if not await units_for(session, viewer, Action.review_pledge):
        raise Refusal("review/paper_not_allowed")
    state = await chat_state.get_state(session, identity_id)
    chat_state.put_state(session, state, identity_id, FLOW_SEARCH, 0, {}, at)
    await session.commit()


@dataclass(frozen=True)
class Found:
    member: Member
    unit: Unit
    filed: bool


async def search(
    session: AsyncSession, viewer: Member | None, text: str, today: date
) -> list[Found]:
    """Members whose paper form the viewer may type in, by name (diacritics ignored)."""
    key = search_key(nfc(text))
    if len(key) < 2:
        raise Refusal("review/search_short")
    tops = await units_for(session, viewer, Action.review_pledge)
    if not tops:
        raise Refusal("review/paper_not_allowed")
    found: list[Found] = []
    for top in tops:
        rows = await session.exec(
            select(Member, Unit)
            .join(Unit, col(Unit.id) == Member.unit_id)
            .where(
                in_subtree(top),
                col(Member.active).is_(True),
                col(Member.name_key).contains(key, autoescape=True),
            )
            .order_by(col(Member.name_key))
            .limit(SEARCH_SHOWN * 3)
        )
        for member, unit in rows.all():
            if len(found) >= SEARCH_SHOWN:
                break
            if not await _may_review(session, viewer, member):
                continue
            in_force = await campaigns.in_force_for_unit(session, unit, today)
            filed = in_force is not None and await _filed(session, member.id, in_force)
            found.append(Found(member, unit, filed))
    return sorted(found, key=lambda f: given_name_sort_key(f.member.full_name))


async def _filed(session: AsyncSession, member_id: int, in_force: CampaignInForce) -> bool:
    pledge = (
        await session.exec(
            select(Pledge).where(
                Pledge.member_id == member_id, Pledge.campaign_id == in_force.campaign.id
            )
        )
    ).first()
    return pledge is not None and pledge.status == PledgeStatus.submitted


@dataclass(frozen=True)
class PaperWizard:
    writer: pledges.Writer
    member: Member
    in_force: CampaignInForce


async def _paper_target(
    session: AsyncSession, viewer: Member | None, identity_id: int, member_id: int, today: date
) -> PaperWizard:
    owner = await session.get(Member, member_id)
    if owner is None or not owner.active:
        raise Refusal("review/not_found")
    if viewer is not None and viewer.id == owner.id:
        raise Refusal("review/paper_own")
    if viewer is None or not await _may_review(session, viewer, owner):
        raise Refusal("review/not_allowed")
    unit = await session.get(Unit, owner.unit_id)
    assert unit is not None
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    if in_force is None:
        raise Refusal("topic/none", unit=unit)
    writer = pledges.Writer(identity_id, owner.id, entered_by=viewer.id)
    return PaperWizard(writer, owner, in_force)


async def open_paper(
    session: AsyncSession,
    viewer: Member | None,
    identity_id: int,
    member_id: int,
    at: datetime,
    tz: tzinfo,
) -> tuple[PaperWizard, pledges.WizardView]:
    target = await _paper_target(session, viewer, identity_id, member_id, at.astimezone(tz).date())
    view = await pledges.open_as(session, target.writer, target.in_force, at, tz)
    return target, view


async def paper_in_progress(
    session: AsyncSession, viewer: Member | None, identity_id: int, today: date
) -> PaperWizard:
    """The paper form this chat is typing in, re-authorised at every step."""
    state = await chat_state.get_state(session, identity_id)
    if state is None or state.flow != pledges.PAPER_FLOW:
        raise Refusal("common/stale_button")
    return await _paper_target(session, viewer, identity_id, state.data["member_id"], today)


# -- the printable pledge ------------------------------------------------------------------


@dataclass(frozen=True)
class PledgeDocument:
    """Everything the printable form shows; no formatting here."""

    upper_body: str  # the union body above the member's CĐCS (the header's first line)
    body: str  # the member's CĐCS (or own unit)
    year: int
    topic: str
    topic_en: str
    member_name: str
    unit_name: str
    position: str | None
    sections: list[dict[str, Any]]
    answers: dict[str, str]
    day: date  # when the version in force was handed in (local)
    entered_by: str | None


async def document(
    session: AsyncSession,
    viewer: Member | None,
    pledge_id: int | None,
    today: date,
    tz: tzinfo,
) -> PledgeDocument:
    """The viewer's own pledge (pledge_id None), or one they may read as an officer."""
    if pledge_id is None:
        if viewer is None:
            raise Refusal("common/join_first")
        unit = await session.get(Unit, viewer.unit_id)
        assert unit is not None
        in_force = await campaigns.in_force_for_unit(session, unit, today)
        pledge = None
        if in_force is not None:
            pledge = (
                await session.exec(
                    select(Pledge).where(
                        Pledge.member_id == viewer.id, Pledge.campaign_id == in_force.campaign.id
                    )
                )
            ).first()
        if pledge is None or pledge.status != PledgeStatus.submitted:
            raise Refusal("review/doc_nothing")
        owner = viewer
    else:
        pledge, owner = await _pledge_and_owner(session, pledge_id)
        if not await may_read_pledge(session, viewer, owner):
            raise Refusal("review/not_allowed")
        if pledge.status != PledgeStatus.submitted:
            raise Refusal("review/not_submitted", member=owner)
    version = await _version(session, pledge)
    unit = await session.get(Unit, owner.unit_id)
    campaign = await session.get(Campaign, pledge.campaign_id)
    assert unit is not None and campaign is not None
    body = await grassroots_of(session, unit)
    upper = await session.get(Unit, body.parent_id) if body.parent_id else None
    entered_by = None
    if version.entered_by_member_id is not None:
        officer = await session.get(Member, version.entered_by_member_id)
        entered_by = officer.full_name if officer else None
    submitted = version.submitted_at
    assert submitted is not None
    if submitted.tzinfo is None:  # SQLite gives naive UTC
        from datetime import UTC

        submitted = submitted.replace(tzinfo=UTC)
    return PledgeDocument(
        upper_body=upper.name if upper else "",
        body=body.name,
        year=campaign.year,
        topic=campaign.topic,
        topic_en=campaign.topic_en,
        member_name=owner.full_name,
        unit_name=unit.name,
        position=owner.position,
        sections=campaign.pledge_sections,
        answers=dict(version.sections),
        day=submitted.astimezone(tz).date(),
        entered_by=entered_by,
    )
