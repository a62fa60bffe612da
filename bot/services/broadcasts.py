"""Officers' broadcasts: the wizard's rules, the audience, queueing, cancelling, the report.

The wizard is a ChatState row (flow "broadcast"): pick a unit (when the officer holds
several), send the content (text, or a photo with a caption), pick the audience, look at the
preview, then send now, schedule, or cancel. Every step re-checks the officer's right to
broadcast at the chosen unit, and the audience is always computed inside that unit's subtree.

Delivery goes through the outbox: one row per reachable recipient, queued in the same
transaction as the Broadcast row, so a crash loses none and repeats at most what was in
flight. When every row is settled, the scheduler tick sends the officer one report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import exists, func, not_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    Broadcast,
    BroadcastAudience,
    BroadcastStatus,
    Campaign,
    ChatIdentity,
    ChatState,
    Member,
    OutboxMessage,
    OutboxStatus,
    Pledge,
    PledgeStatus,
    Unit,
)
from bot.services import campaigns, chat_state, outbox
from bot.services.authorization import Action, may, units_for
from bot.services.errors import Refusal
from bot.services.people import Person
from bot.text import given_name_sort_key, nfc

FLOW = "broadcast"
KIND = "broadcast"
CHANNEL = "telegram"
TEXT_MAX = 4096  # Telegram's limits for the whole message as members see it
CAPTION_MAX = 1024
TOMORROW_AT = time(7, 30)  # the "tomorrow 07:30" choice: when the sending window opens

# Wizard steps.
PICK_UNIT, CONTENT, AUDIENCE, PICK_CHILD, PREVIEW, SCHEDULE = range(6)

OPEN = (BroadcastStatus.scheduled, BroadcastStatus.queued)
SETTLED = (OutboxStatus.sent, OutboxStatus.failed, OutboxStatus.blocked, OutboxStatus.cancelled)

# Renders the message members see, for a recipient's locale (None: the bot's default).
MessageRenderer = Callable[[Broadcast, Unit, str | None], str]


@dataclass(frozen=True)
class WizardView:
    """What the officer should see now."""

    step: int
    version: int
    unit: Unit | None = None
    units: list[Unit] = field(default_factory=list)  # to pick from (PICK_UNIT, PICK_CHILD)
    preview: Preview | None = None


@dataclass(frozen=True)
class Preview:
    """The broadcast as it would go out now, and how many it reaches."""

    unit: Unit  # the sender's unit
    target: Unit  # the audience's subtree: the sender's unit or one sub-unit
    audience: BroadcastAudience
    text: str
    photo: str | None
    reachable: int
    not_on_bot: int
    blocked: int

    @property
    def unreachable(self) -> int:
        return self.not_on_bot + self.blocked

    def draft(self) -> Broadcast:
        """An unsaved Broadcast with this content, so the preview renders like the real one."""
        return Broadcast(
            sender_member_id=0,
            unit_id=self.unit.id,
            audience=self.audience,
            text=self.text,
            photo=self.photo,
            status=BroadcastStatus.scheduled,
        )


@dataclass(frozen=True)
class Recipients:
    reachable: list[tuple[Member, ChatIdentity]]
    not_on_bot: list[Member]
    blocked: list[Member]


@dataclass(frozen=True)
class InProgress:
    broadcast: Broadcast
    unit: Unit
    sent: int
    total: int


@dataclass(frozen=True)
class Cancelled:
    broadcast: Broadcast
    delivered: int
    cancelled: int


@dataclass(frozen=True)
class ReportLine:
    name: str
    unit: str
    status: str  # sent | failed | blocked | cancelled | not_on_bot


@dataclass(frozen=True)
class Report:
    broadcast: Broadcast
    unit: Unit
    chat_id: str | None
    locale: str | None
    counts: dict[str, int]
    lines: list[ReportLine]


# -- the wizard ---------------------------------------------------------------------------


async def open_wizard(session: AsyncSession, person: Person, at: datetime) -> WizardView:
    """/broadcast: start over; with several units, the officer picks one first."""
    units = await units_for(session, person.member, Action.broadcast)
    if not units:
        raise Refusal("broadcast/not_allowed")
    state = await chat_state.get_state(session, person.identity.id)
    if len(units) == 1:
        state = chat_state.put_state(
            session, state, person.identity.id, FLOW, CONTENT, {"unit_id": units[0].id}, at
        )
        await session.commit()
        return WizardView(CONTENT, state.version, unit=units[0])
    state = chat_state.put_state(session, state, person.identity.id, FLOW, PICK_UNIT, {}, at)
    await session.commit()
    return WizardView(PICK_UNIT, state.version, units=units)


async def _active(
    session: AsyncSession, person: Person, version: int | None, steps: tuple[int, ...]
) -> tuple[ChatState, Unit | None]:
    """The wizard this chat is in, at one of `steps`, still allowed at its unit."""
    state = await chat_state.get_state(session, person.identity.id)
    if state is None or state.flow != FLOW:
        raise Refusal("common/stale_button" if version is not None else "broadcast/not_in_wizard")
    if version is not None and version != state.version:
        raise Refusal("common/stale_button")
    if state.step not in steps:
        raise Refusal("common/stale_button" if version is not None else "broadcast/use_buttons")
    unit = None
    if "unit_id" in state.data:
        unit = await session.get(Unit, state.data["unit_id"])
        if unit is None or not await may(session, person.member, Action.broadcast, unit):
            await chat_state.clear_state(session, state)
            await session.commit()
            raise Refusal("broadcast/not_allowed")
    elif not await units_for(session, person.member, Action.broadcast):
        await chat_state.clear_state(session, state)
        await session.commit()
        raise Refusal("broadcast/not_allowed")
    return state, unit


async def current_step(session: AsyncSession, person: Person) -> int | None:
    state = await chat_state.get_state(session, person.identity.id)
    return state.step if state is not None and state.flow == FLOW else None


async def choose_unit(
    session: AsyncSession, person: Person, version: int, unit_id: int, at: datetime
) -> WizardView:
    state, _ = await _active(session, person, version, (PICK_UNIT,))
    unit = await session.get(Unit, unit_id)
    if unit is None or not await may(session, person.member, Action.broadcast, unit):
        raise Refusal("broadcast/unit_not_allowed")
    state = chat_state.put_state(
        session, state, person.identity.id, FLOW, CONTENT, {"unit_id": unit.id}, at
    )
    await session.commit()
    return WizardView(CONTENT, state.version, unit=unit)


def check_content(text: str, photo: str | None, header_room: int) -> str:
    """Trimmed NFC text that fits Telegram's limit once the members' header is added.

    `header_room` is how many characters the template adds around the text (the longest
    of the locales), so what fits here fits in every recipient's message.
    """
    cleaned = nfc(text or "").strip()
    if not photo and not any(ch.isalnum() for ch in cleaned):
        raise Refusal("broadcast/empty")
    limit = (CAPTION_MAX if photo else TEXT_MAX) - header_room
    length = len(cleaned.encode("utf-16-le")) // 2
    if length > limit:
        raise Refusal("broadcast/too_long", length=length, limit=limit, photo=bool(photo))
    return cleaned


async def content(
    session: AsyncSession,
    person: Person,
    text: str,
    photo: str | None,
    header_room: Callable[[Unit], int],
    at: datetime,
) -> WizardView:
    """The officer's text or photo: kept in the wizard; next, the audience."""
    state, unit = await _active(session, person, None, (CONTENT,))
    assert unit is not None
    cleaned = check_content(text, photo, header_room(unit))
    data = {"unit_id": unit.id, "text": cleaned, "photo": photo}
    state = chat_state.put_state(session, state, person.identity.id, FLOW, AUDIENCE, data, at)
    await session.commit()
    return WizardView(AUDIENCE, state.version, unit=unit)


async def _children(session: AsyncSession, unit: Unit) -> list[Unit]:
    rows = await session.exec(select(Unit).where(Unit.parent_id == unit.id).order_by(Unit.name))
    return list(rows.all())


async def choose_audience(
    session: AsyncSession,
    person: Person,
    version: int,
    audience: BroadcastAudience,
    at: datetime,
    tz: tzinfo,
) -> WizardView:
    """Whole subtree, not pledged or not joined: the preview; one sub-unit: pick it first."""
    state, unit = await _active(session, person, version, (AUDIENCE, PREVIEW, PICK_CHILD))
    assert unit is not None
    if audience == BroadcastAudience.unit:
        children = await _children(session, unit)
        if not children:
            raise Refusal("broadcast/no_sub_units", unit=unit)
        data = {**state.data, "audience": audience.value}
        state = chat_state.put_state(session, state, person.identity.id, FLOW, PICK_CHILD, data, at)
        await session.commit()
        return WizardView(PICK_CHILD, state.version, unit=unit, units=children)
    return await _to_preview(session, person, state, unit, audience, unit, at, tz)


async def choose_child(
    session: AsyncSession, person: Person, version: int, child_id: int, at: datetime, tz: tzinfo
) -> WizardView:
    state, unit = await _active(session, person, version, (PICK_CHILD,))
    assert unit is not None
    child = await session.get(Unit, child_id)
    if child is None or child.parent_id != unit.id:  # only a sub-unit of the sender's unit
        raise Refusal("broadcast/unit_not_allowed")
    return await _to_preview(session, person, state, unit, BroadcastAudience.unit, child, at, tz)


async def _to_preview(
    session: AsyncSession,
    person: Person,
    state: ChatState,
    unit: Unit,
    audience: BroadcastAudience,
    target: Unit,
    at: datetime,
    tz: tzinfo,
) -> WizardView:
    who = await recipients(session, target, audience, at, tz, exclude=person.member)
    data = {**state.data, "audience": audience.value, "target_id": target.id}
    state = chat_state.put_state(session, state, person.identity.id, FLOW, PREVIEW, data, at)
    await session.commit()
    preview = Preview(
        unit=unit,
        target=target,
        audience=audience,
        text=data["text"],
        photo=data.get("photo"),
        reachable=len(who.reachable),
        not_on_bot=len(who.not_on_bot),
        blocked=len(who.blocked),
    )
    return WizardView(PREVIEW, state.version, unit=unit, preview=preview)


async def ask_schedule(
    session: AsyncSession, person: Person, version: int, at: datetime
) -> WizardView:
    """ "Schedule": the choices, or a typed date and time."""
    state, unit = await _active(session, person, version, (PREVIEW,))
    state = chat_state.put_state(session, state, person.identity.id, FLOW, SCHEDULE, state.data, at)
    await session.commit()
    return WizardView(SCHEDULE, state.version, unit=unit)


def tomorrow_at(at: datetime, tz: tzinfo) -> datetime:
    local = at.astimezone(tz)
    return datetime.combine(local.date() + timedelta(days=1), TOMORROW_AT, tzinfo=tz)


def parse_when(text: str, tz: tzinfo) -> datetime:
    """ "dd/mm/yyyy hh:mm" in the members' time zone."""
    try:
        moment = datetime.strptime(" ".join(text.split()), "%d/%m/%Y %H:%M")
    except ValueError:
        raise Refusal("broadcast/schedule_invalid") from None
    return moment.replace(tzinfo=tz)


async def _send_target(
    session: AsyncSession, state: ChatState, unit: Unit
) -> tuple[BroadcastAudience, Unit]:
    audience = BroadcastAudience(state.data["audience"])
    target = await session.get(Unit, state.data.get("target_id", unit.id))
    if target is None or not target.path.startswith(unit.path):
        raise Refusal("broadcast/unit_not_allowed")
    return audience, target


async def confirm(
    session: AsyncSession,
    person: Person,
    version: int | None,
    render: MessageRenderer,
    at: datetime,
    tz: tzinfo,
    send_at: datetime | None = None,
) -> Broadcast:
    """Send now (the outbox rows are queued with the Broadcast, in one transaction) or
    schedule for `send_at` (the scheduler tick queues it then); the wizard ends."""
    steps = (SCHEDULE,) if send_at is not None else (PREVIEW,)
    state, unit = await _active(session, person, version, steps)
    assert unit is not None and person.member is not None
    if send_at is not None and send_at <= at:
        raise Refusal("broadcast/schedule_past", when=send_at)
    if send_at is not None:
        send_at = send_at.astimezone(UTC)  # stored times are UTC (SQLite keeps no zone)
    audience, target = await _send_target(session, state, unit)
    broadcast = Broadcast(
        sender_member_id=person.member.id,
        sender_identity_id=person.identity.id,
        unit_id=target.id,
        audience=audience,
        text=state.data["text"],
        photo=state.data.get("photo"),
        status=BroadcastStatus.scheduled,
        send_at=send_at or at,
        created_at=at,
    )
    session.add(broadcast)
    await session.flush()
    if send_at is None:
        await _queue(session, broadcast, target, render, at, tz)
    await chat_state.clear_state(session, state)
    await session.commit()
    return broadcast


async def cancel_wizard(session: AsyncSession, person: Person, version: int) -> None:
    state, _ = await _active(session, person, version, tuple(range(6)))
    await chat_state.clear_state(session, state)
    await session.commit()


# -- the audience -------------------------------------------------------------------------


async def recipients(
    session: AsyncSession,
    target: Unit,
    audience: BroadcastAudience,
    at: datetime,
    tz: tzinfo,
    exclude: Member | None = None,
) -> Recipients:
    """Active members of `target`'s subtree in the audience, split by whether the bot can
    reach them. Nothing outside the subtree is ever read."""
    query = (
        select(Member, ChatIdentity)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .outerjoin(
            ChatIdentity,
            (col(ChatIdentity.member_id) == Member.id) & (ChatIdentity.channel == CHANNEL),
        )
        .where(col(Unit.path).startswith(target.path), col(Member.active).is_(True))
        .order_by(Member.id)
    )
    if exclude is not None:
        query = query.where(Member.id != exclude.id)
    if audience == BroadcastAudience.not_pledged:
        in_force = await campaigns.in_force_for_unit(session, target, at.astimezone(tz).date())
        if in_force is None:
            raise Refusal("broadcast/no_campaign", unit=target)
        pledged = exists().where(
            Pledge.member_id == Member.id,
            Pledge.status == PledgeStatus.submitted,
            Pledge.campaign_id == Campaign.id,
            Campaign.year == in_force.campaign.year,
        )
        query = query.where(not_(pledged))
    seen: dict[int, tuple[Member, ChatIdentity | None]] = {}
    for member, identity in (await session.exec(query)).all():
        if member.id not in seen or (identity is not None and identity.blocked_at is None):
            seen[member.id] = (member, identity)
    reachable, not_on_bot, blocked = [], [], []
    for member, identity in seen.values():
        if identity is None:
            not_on_bot.append(member)
        elif identity.blocked_at is not None:
            blocked.append(member)
        elif audience != BroadcastAudience.not_joined:
            reachable.append((member, identity))
    if audience == BroadcastAudience.not_joined:
        # Those the bot cannot reach: counted and reported, never sent anything.
        return Recipients([], not_on_bot, [])
    return Recipients(reachable, not_on_bot, blocked)


def dedupe_key(broadcast_id: int, member_id: int) -> str:
    return f"bc:{broadcast_id}:{member_id}"


async def _queue(
    session: AsyncSession,
    broadcast: Broadcast,
    target: Unit,
    render: MessageRenderer,
    at: datetime,
    tz: tzinfo,
) -> int:
    """One outbox row per reachable recipient, in the caller's transaction."""
    assert broadcast.id is not None
    sender = await session.get(Member, broadcast.sender_member_id)
    sender_unit = await _sender_unit(session, broadcast)
    who = await recipients(session, target, broadcast.audience, at, tz, exclude=sender)
    texts: dict[str | None, str] = {}
    messages = []
    for member, identity in who.reachable:
        locale = identity.locale
        if locale not in texts:
            texts[locale] = render(broadcast, sender_unit, locale)
        messages.append(
            outbox.Queued(
                dedupe_key(broadcast.id, member.id),
                KIND,
                identity.id,
                identity.chat_id,
                texts[locale],
                photo=broadcast.photo,
                broadcast_id=broadcast.id,
            )
        )
    await outbox.enqueue(session, messages, at)
    broadcast.status = BroadcastStatus.queued
    broadcast.recipients = len(messages)
    broadcast.unreachable_member_ids = [m.id for m in who.not_on_bot + who.blocked]
    broadcast.queued_at = at
    session.add(broadcast)
    return len(messages)


async def _sender_unit(session: AsyncSession, broadcast: Broadcast) -> Unit:
    """Who the notice is from: the sender's unit that holds the audience (the audience may
    be one of its sub-units)."""
    target = await session.get(Unit, broadcast.unit_id)
    assert target is not None
    sender = await session.get(Member, broadcast.sender_member_id)
    for unit in await units_for(session, sender, Action.broadcast):
        if target.path.startswith(unit.path):
            return unit
    return target


async def queue_due(
    session: AsyncSession, render: MessageRenderer, at: datetime, tz: tzinfo
) -> int:
    """Scheduled broadcasts whose time came (by the clock): queue them. Returns rows queued.

    The sender must still be allowed to broadcast there; otherwise the broadcast is
    cancelled rather than sent on a role they no longer hold.
    """
    due = (
        await session.exec(
            select(Broadcast)
            .where(Broadcast.status == BroadcastStatus.scheduled, col(Broadcast.send_at) <= at)
            .order_by(Broadcast.id)
            .with_for_update(skip_locked=True)
        )
    ).all()
    queued = 0
    for broadcast in due:
        target = await session.get(Unit, broadcast.unit_id)
        sender = await session.get(Member, broadcast.sender_member_id)
        if target is None or not await may(session, sender, Action.broadcast, target):
            broadcast.status = BroadcastStatus.cancelled
            broadcast.cancelled_at = broadcast.reported_at = at
            session.add(broadcast)
            continue
        try:
            queued += await _queue(session, broadcast, target, render, at, tz)
        except Refusal:  # e.g. no campaign in force any more for "not pledged"
            broadcast.status = BroadcastStatus.cancelled
            broadcast.cancelled_at = at
            session.add(broadcast)
    await session.commit()
    return queued


# -- in progress and cancelling -------------------------------------------------------------


async def in_progress(session: AsyncSession, member: Member | None) -> list[InProgress]:
    """The sender's broadcasts still scheduled or being delivered."""
    if member is None:
        return []
    rows = (
        await session.exec(
            select(Broadcast, Unit)
            .join(Unit, col(Unit.id) == Broadcast.unit_id)
            .where(
                Broadcast.sender_member_id == member.id,
                col(Broadcast.status).in_(OPEN),
                col(Broadcast.reported_at).is_(None),
            )
            .order_by(Broadcast.id)
        )
    ).all()
    result = []
    for broadcast, unit in rows:
        counts = await _status_counts(session, broadcast.id)
        if broadcast.status == BroadcastStatus.queued and not _open_rows(counts):
            continue  # everything settled: the report is on its way
        result.append(
            InProgress(broadcast, unit, counts.get(OutboxStatus.sent, 0), broadcast.recipients)
        )
    return result


async def _status_counts(session: AsyncSession, broadcast_id: int | None) -> dict[str, int]:
    rows = await session.exec(
        select(OutboxMessage.status, func.count())
        .where(OutboxMessage.broadcast_id == broadcast_id)
        .group_by(OutboxMessage.status)
    )
    return {status: count for status, count in rows.all()}


def _open_rows(counts: dict[str, int]) -> int:
    return counts.get(OutboxStatus.pending, 0) + counts.get(OutboxStatus.claimed, 0)


async def stopped_among(session: AsyncSession, broadcast_ids: set[int]) -> set[int]:
    """Which of these broadcasts their sender stopped (the outbox worker skips their rows)."""
    rows = await session.exec(
        select(Broadcast.id).where(
            col(Broadcast.id).in_(list(broadcast_ids)),
            Broadcast.status == BroadcastStatus.cancelled,
        )
    )
    return {id_ for id_ in rows.all() if id_ is not None}


async def cancel_broadcast(
    session: AsyncSession, person: Person, broadcast_id: int, at: datetime
) -> Cancelled:
    """Stop a broadcast: rows not yet sent are cancelled; only its sender may do it.

    A row in flight at this moment may still be delivered; the worker then marks it sent,
    and the report counts it as delivered.
    """
    broadcast = (
        await session.exec(select(Broadcast).where(Broadcast.id == broadcast_id).with_for_update())
    ).first()
    if broadcast is None or person.member is None or broadcast.sender_member_id != person.member.id:
        raise Refusal("broadcast/not_yours")
    if broadcast.status not in OPEN or broadcast.reported_at is not None:
        raise Refusal("broadcast/already_finished")
    result = await session.exec(
        update(OutboxMessage)
        .where(
            OutboxMessage.broadcast_id == broadcast.id,
            col(OutboxMessage.status).in_([OutboxStatus.pending, OutboxStatus.claimed]),
        )
        .values(status=OutboxStatus.cancelled, claimed_until=None)
    )
    was_scheduled = broadcast.status == BroadcastStatus.scheduled
    broadcast.status = BroadcastStatus.cancelled
    broadcast.cancelled_at = at
    if was_scheduled:  # nothing went out: no report to wait for
        broadcast.reported_at = at
    session.add(broadcast)
    await session.commit()
    counts = await _status_counts(session, broadcast.id)
    await session.commit()
    return Cancelled(broadcast, counts.get(OutboxStatus.sent, 0), result.rowcount or 0)


# -- the delivery report ----------------------------------------------------------------------


async def settled(session: AsyncSession, limit: int = 20) -> list[Report]:
    """Broadcasts whose every row is settled and whose report has not gone out yet."""
    open_rows = exists().where(
        OutboxMessage.broadcast_id == Broadcast.id,
        col(OutboxMessage.status).in_([OutboxStatus.pending, OutboxStatus.claimed]),
    )
    broadcasts = (
        await session.exec(
            select(Broadcast)
            .where(
                col(Broadcast.status).in_([BroadcastStatus.queued, BroadcastStatus.cancelled]),
                col(Broadcast.reported_at).is_(None),
                not_(open_rows),
            )
            .order_by(Broadcast.id)
            .limit(limit)
        )
    ).all()
    return [await _report(session, b) for b in broadcasts]


async def _report(session: AsyncSession, broadcast: Broadcast) -> Report:
    unit = await session.get(Unit, broadcast.unit_id)
    assert unit is not None
    identity = (
        await session.get(ChatIdentity, broadcast.sender_identity_id)
        if broadcast.sender_identity_id
        else None
    )
    rows = (
        await session.exec(
            select(OutboxMessage.dedupe_key, OutboxMessage.status).where(
                OutboxMessage.broadcast_id == broadcast.id
            )
        )
    ).all()
    status_of = {int(key.rsplit(":", 1)[1]): str(status) for key, status in rows}
    lines = []
    if status_of:
        members = await session.exec(
            select(Member.id, Member.full_name, Unit.name)
            .join(Unit, col(Unit.id) == Member.unit_id)
            .where(col(Member.id).in_(list(status_of)))
        )
        lines = [ReportLine(name, unit_name, status_of[id_]) for id_, name, unit_name in members]
    if broadcast.unreachable_member_ids:
        has_identity = exists().where(
            ChatIdentity.member_id == Member.id, ChatIdentity.channel == CHANNEL
        )
        unreachable = await session.exec(
            select(Member.full_name, Unit.name, has_identity)
            .join(Unit, col(Unit.id) == Member.unit_id)
            .where(col(Member.id).in_(broadcast.unreachable_member_ids))
        )
        for name, unit_name, known in unreachable.all():
            lines.append(ReportLine(name, unit_name, "blocked" if known else "not_on_bot"))
    lines.sort(key=lambda line: (line.unit, given_name_sort_key(line.name)))
    counts: dict[str, Any] = {
        key: 0 for key in ("sent", "failed", "blocked", "cancelled", "not_on_bot")
    }
    for line in lines:
        counts[line.status] += 1
    return Report(
        broadcast=broadcast,
        unit=unit,
        chat_id=identity.chat_id if identity and identity.member_id else None,
        locale=identity.locale if identity else None,
        counts=counts,
        lines=lines,
    )


async def mark_reported(session: AsyncSession, broadcast_id: int, at: datetime) -> bool:
    """Record that the report went out (once: a second marking changes nothing)."""
    result = await session.exec(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, col(Broadcast.reported_at).is_(None))
        .values(reported_at=at)
    )
    await session.exec(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.status == BroadcastStatus.queued)
        .values(status=BroadcastStatus.done)
    )
    await session.commit()
    return bool(result.rowcount)
