"""Who is owed a notice now: reminders before deadlines, late notices, officers' late lists
and leaders' digests. Decided from the data at each tick, never one job per member.

The service decides and records; the scheduler job renders each notice's template and hands
the texts back to `record`, which queues them in the outbox and logs the decision in one
transaction. The (kind, person, deadline, offset, unit) unique key makes every decision once.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, not_, or_, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    Campaign,
    ChatIdentity,
    Deadline,
    DeadlineSweep,
    Member,
    NoticeKind,
    OwedBy,
    Pledge,
    PledgeStatus,
    ReminderLog,
    ReminderStatus,
    Role,
    RoleGrant,
    Unit,
)
from bot.services import deadlines as deadline_rules
from bot.services.outbox import Queued, enqueue, insert_ignoring_duplicates
from bot.services.units import grassroots_among

if TYPE_CHECKING:
    from bot.catalog import Catalog, ReminderPolicySpec

CHANNEL = "telegram"
BATCH = 2000  # per deadline and kind per tick: well above what 24 messages/s drain in a minute
LATE_GRACE_DAYS = 7  # late notices and lists go out within a week after the deadline, not later


@dataclass(frozen=True, slots=True)
class Recipient:
    member_id: int
    identity_id: int
    chat_id: str
    locale: str | None
    full_name: str


@dataclass
class Notice:
    """A decision to tell one person one thing; the job renders `template` with `context`."""

    kind: NoticeKind
    recipient: Recipient
    deadline: Deadline
    offset: int
    unit_id: int = 0
    superseded: list[int] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        kind, member = self.kind.value, self.recipient.member_id
        return f"{kind}:{self.deadline.id}:{self.offset}:u{self.unit_id}:m{member}"

    @property
    def template(self) -> str:
        if self.kind == NoticeKind.reminder:
            return "notices/reminder_unit" if self.unit_id else "notices/reminder"
        return f"notices/{self.kind.value}"


def policy_for(campaign: Campaign, catalog: Catalog) -> ReminderPolicySpec:
    """The unit's own policy when it set one, else the shipped campaign's."""
    from bot.catalog import ReminderPolicySpec

    if campaign.reminder_policy:
        return ReminderPolicySpec.model_validate(campaign.reminder_policy)
    try:
        return catalog.reminder_policy(campaign.catalog_id)
    except KeyError:
        return catalog.default_reminder_policy


def can_send_now(
    local_now: datetime, policy: ReminderPolicySpec, holidays: frozenset[date]
) -> bool:
    """Inside the sending window, on a day that is not skipped."""
    if policy.skip_holidays and local_now.date() in holidays:
        return False
    return policy.window.start <= local_now.time() < policy.window.end


def due_offsets(last_day: date, offsets: Sequence[int], today: date) -> list[int]:
    """Offsets whose day has come, while the deadline is still ahead; latest (smallest) first."""
    if today > last_day:
        return []
    return sorted(o for o in offsets if last_day - timedelta(days=o) <= today)


# -- who ------------------------------------------------------------------------------------


async def scope(session: AsyncSession, campaign: Campaign) -> tuple[Unit, list[str]]:
    """The campaign's unit and the paths below it that set their own campaign that year."""
    unit = await session.get(Unit, campaign.unit_id)
    assert unit is not None
    overridden = await session.exec(
        select(Unit.path)
        .join(Campaign, col(Campaign.unit_id) == Unit.id)
        .where(
            Campaign.year == campaign.year,
            Campaign.id != campaign.id,
            col(Unit.path).startswith(unit.path),
            Unit.id != unit.id,
        )
    )
    return unit, [row for row in overridden.scalars().all()]


def _in_scope(unit: Unit, excluded: list[str]):
    clause = col(Unit.path).startswith(unit.path)
    if excluded:
        clause = and_(clause, not_(or_(*[col(Unit.path).startswith(p) for p in excluded])))
    return clause


def _reachable(today: date):
    """An active member on the bot, not blocked, not muted today."""
    return and_(
        col(Member.active).is_(True),
        col(ChatIdentity.blocked_at).is_(None),
        ChatIdentity.channel == CHANNEL,
        or_(col(Member.reminders_muted_until).is_(None), Member.reminders_muted_until < today),
    )


def _owes(deadline: Deadline):
    """A member owes a member deadline while it is not done. Only the pledge is tracked yet."""
    if deadline.name != "pledge":
        return None
    return not_(
        exists().where(
            Pledge.member_id == Member.id,
            Pledge.campaign_id == deadline.campaign_id,
            Pledge.status == PledgeStatus.submitted,
        )
    )


def _not_logged(kind: NoticeKind, deadline: Deadline, offsets: Sequence[int], unit_id: int = 0):
    return not_(
        exists().where(
            ReminderLog.member_id == Member.id,
            ReminderLog.kind == kind,
            ReminderLog.deadline_id == deadline.id,
            col(ReminderLog.offset_days).in_(list(offsets)),
            ReminderLog.unit_id == unit_id,
        )
    )


def owing_members_query(
    unit: Unit,
    excluded: list[str],
    deadline: Deadline,
    kind: NoticeKind,
    offsets: Sequence[int],
    today: date,
):
    """Members who still owe `deadline`, can be reached, and have no such notice logged."""
    owes = _owes(deadline)
    if owes is None:
        return None
    return (
        select(
            Member.id, ChatIdentity.id, ChatIdentity.chat_id, ChatIdentity.locale, Member.full_name
        )
        .join(Unit, col(Unit.id) == Member.unit_id)
        .join(ChatIdentity, col(ChatIdentity.member_id) == Member.id)
        .where(
            _in_scope(unit, excluded), _reachable(today), owes, _not_logged(kind, deadline, offsets)
        )
        .order_by(Member.id)
    )


async def owing_members(
    session: AsyncSession,
    unit: Unit,
    excluded: list[str],
    deadline: Deadline,
    kind: NoticeKind,
    offsets: Sequence[int],
    today: date,
    limit: int | None = BATCH,
) -> list[Recipient]:
    query = owing_members_query(unit, excluded, deadline, kind, offsets, today)
    if query is None:
        return []
    if limit is not None:
        query = query.limit(limit)
    # Building hundreds of thousands of small objects triggers repeated full collections
    # that cost more than the query itself; nothing here makes cycles, so pause the collector.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        rows = await session.exec(query)
        return [Recipient(*row) for row in rows.all()]
    finally:
        if was_enabled:
            gc.enable()


async def _role_holders(
    session: AsyncSession,
    unit: Unit,
    excluded: list[str],
    role: Role,
    today: date,
    below_only: bool = False,
) -> list[tuple[Unit, Recipient]]:
    query = (
        select(
            Unit,
            Member.id,
            ChatIdentity.id,
            ChatIdentity.chat_id,
            ChatIdentity.locale,
            Member.full_name,
        )
        .join(RoleGrant, col(RoleGrant.unit_id) == Unit.id)
        .join(Member, col(Member.id) == RoleGrant.member_id)
        .join(ChatIdentity, col(ChatIdentity.member_id) == Member.id)
        .where(
            _in_scope(unit, excluded),
            RoleGrant.role == role,
            col(RoleGrant.revoked_at).is_(None),
            _reachable(today),
        )
    )
    if below_only:
        query = query.where(Unit.id != unit.id)
    rows = await session.exec(query)
    return [(row[0], Recipient(*row[1:])) for row in rows.all()]


async def _logged(
    session: AsyncSession, kind: NoticeKind, deadline: Deadline, offset: int
) -> set[tuple[int, int]]:
    rows = await session.exec(
        select(ReminderLog.member_id, ReminderLog.unit_id).where(
            ReminderLog.kind == kind,
            ReminderLog.deadline_id == deadline.id,
            ReminderLog.offset_days == offset,
        )
    )
    return {(m, u) for m, u in rows.all()}


async def late_members_by_unit(
    session: AsyncSession,
    unit: Unit,
    excluded: list[str],
    deadline: Deadline,
) -> dict[int, list[Member]]:
    """Active members who still owe `deadline`, on the bot or not, by grassroots union."""
    owes = _owes(deadline)
    if owes is None:
        return {}
    rows = await session.exec(
        select(Member, Unit)
        .join(Unit, col(Unit.id) == Member.unit_id)
        .where(_in_scope(unit, excluded), col(Member.active).is_(True), owes)
    )
    units = {
        u.id: u for u in (await session.exec(select(Unit).where(_in_scope(unit, [])))).scalars()
    }
    grouped: dict[int, list[Member]] = {}
    for member, member_unit in rows.all():
        home = grassroots_among(member_unit, units)
        grouped.setdefault(home.id, []).append(member)
    return grouped


# -- the plan ---------------------------------------------------------------------------------


@dataclass
class Plan:
    notices: list[Notice] = field(default_factory=list)
    skipped: list[tuple[NoticeKind, int, Deadline, int, int]] = field(default_factory=list)
    swept: list[int] = field(default_factory=list)  # deadlines whose skipped ones are recorded


async def plan(session: AsyncSession, catalog: Catalog, now: datetime, tz: tzinfo) -> Plan:
    """Everything due now, across every campaign in force whose deadlines are near."""
    from bot.services.summary import for_unit

    local_now = now.astimezone(tz)
    today = local_now.date()
    result = Plan()
    campaigns = (await session.exec(select(Campaign))).scalars().all()
    for campaign in campaigns:
        policy = policy_for(campaign, catalog)
        sendable = can_send_now(local_now, policy, catalog.holidays)
        deadlines = (
            (await session.exec(select(Deadline).where(Deadline.campaign_id == campaign.id)))
            .scalars()
            .all()
        )
        if not any(_near(d, today, policy) for d in deadlines):
            continue
        unit, excluded = await scope(session, campaign)
        for deadline in deadlines:
            last_day = deadline_rules.last_day(deadline)
            days_left = (last_day - today).days
            base = {
                "deadline": deadline,
                "last_day": last_day,
                "days_left": days_left,
                "campaign": campaign,
            }
            due = due_offsets(last_day, policy.offsets_days, today)
            if due and sendable:
                latest, older = due[0], due[1:]
                if deadline.owed_by == OwedBy.member:
                    for person in await owing_members(
                        session, unit, excluded, deadline, NoticeKind.reminder, [latest], today
                    ):
                        result.notices.append(
                            Notice(
                                NoticeKind.reminder,
                                person,
                                deadline,
                                latest,
                                superseded=older,
                                context=base,
                            )
                        )
                else:
                    done = await _logged(session, NoticeKind.reminder, deadline, latest)
                    holders = await _role_holders(
                        session, unit, excluded, Role.leader, today, below_only=True
                    )
                    sent = await _reports_sent(session, deadline, campaign, holders)
                    for owing_unit, person in holders:
                        if (person.member_id, owing_unit.id) not in done and (
                            owing_unit.id not in sent
                        ):
                            result.notices.append(
                                Notice(
                                    NoticeKind.reminder,
                                    person,
                                    deadline,
                                    latest,
                                    owing_unit.id,
                                    superseded=older,
                                    context={**base, "unit": owing_unit},
                                )
                            )
            if sendable and 0 < -days_left <= LATE_GRACE_DAYS and deadline.owed_by == OwedBy.member:
                for person in await owing_members(
                    session, unit, excluded, deadline, NoticeKind.late, [-1], today
                ):
                    result.notices.append(
                        Notice(NoticeKind.late, person, deadline, -1, context=base)
                    )
                await _late_lists(session, unit, excluded, deadline, today, base, result)
            # Digests count pledges, so they go with the member deadlines they measure.
            if sendable and _owes(deadline) is not None:
                await _digests(
                    session,
                    unit,
                    excluded,
                    deadline,
                    policy,
                    today,
                    now,
                    tz,
                    base,
                    result,
                    for_unit,
                )
            if days_left < 0 and deadline.owed_by == OwedBy.member:
                await _record_missed(session, unit, excluded, deadline, policy, today, result)
    return result


async def _reports_sent(
    session: AsyncSession, deadline: Deadline, campaign: Campaign, holders: list
) -> set[int]:
    """Units that already sent the report this deadline asks for: their leaders are done."""
    from bot.services import reports

    kind = reports.DEADLINE_KINDS.get(deadline.name)
    if kind is None:
        return set()
    unit_ids = sorted({owing_unit.id for owing_unit, _ in holders})
    return await reports.sent_units(session, unit_ids, campaign.year, kind)


def _near(deadline: Deadline, today: date, policy: ReminderPolicySpec) -> bool:
    """Worth a look: between the first offset (or digest) and a week after the last day."""
    days_left = deadline_rules.days_left(deadline, today)
    reach = max([*policy.offsets_days, policy.digest_days_before])
    return -max(LATE_GRACE_DAYS, policy.digest_days_after + 6) <= days_left <= reach


async def _late_lists(session, unit, excluded, deadline, today, base, result: Plan) -> None:
    officers = await _role_holders(session, unit, excluded, Role.officer, today)
    done = await _logged(session, NoticeKind.late_list, deadline, -1)
    waiting = [(u, p) for u, p in officers if (p.member_id, u.id) not in done]
    if not waiting:
        return
    late = await late_members_by_unit(session, unit, excluded, deadline)
    for officer_unit, person in waiting:
        names = sorted((m.full_name for m in late.get(officer_unit.id, [])), key=_given_name_key)
        result.notices.append(
            Notice(
                NoticeKind.late_list,
                person,
                deadline,
                -1,
                officer_unit.id,
                context={**base, "unit": officer_unit, "late": names},
            )
        )


def _given_name_key(name: str):
    from bot.text import given_name_sort_key

    return given_name_sort_key(name)


async def _digests(
    session, unit, excluded, deadline, policy, today, now, tz, base, result: Plan, for_unit
) -> None:
    last_day = deadline_rules.last_day(deadline)
    before = last_day - timedelta(days=policy.digest_days_before)
    after = last_day + timedelta(days=policy.digest_days_after)
    if before <= today <= last_day:
        offset = policy.digest_days_before
    elif after <= today <= after + timedelta(days=6):
        offset = -policy.digest_days_after
    else:
        return
    done = await _logged(session, NoticeKind.digest, deadline, offset)
    for leader_unit, person in await _role_holders(session, unit, excluded, Role.leader, today):
        if (person.member_id, leader_unit.id) in done:
            continue
        summary = await for_unit(session, leader_unit.id, now, tz)
        result.notices.append(
            Notice(
                NoticeKind.digest,
                person,
                deadline,
                offset,
                leader_unit.id,
                context={**base, "unit": leader_unit, "summary": summary, "after": offset < 0},
            )
        )


async def _record_missed(session, unit, excluded, deadline, policy, today, result: Plan) -> None:
    """After the last day, reminders that never had their chance are recorded as skipped.

    Done once per deadline (DeadlineSweep), since it reads every owing member.
    """
    if await session.get(DeadlineSweep, deadline.id) is not None:
        return
    for offset in policy.offsets_days:
        query = owing_members_query(unit, excluded, deadline, NoticeKind.reminder, [offset], today)
        if query is None:
            return
        for row in (await session.exec(query.with_only_columns(Member.id))).all():
            result.skipped.append((NoticeKind.reminder, row[0], deadline, offset, 0))
    result.swept.append(deadline.id)


# -- recording ------------------------------------------------------------------------------


async def record(
    session: AsyncSession, plan_: Plan, texts: dict[str, tuple[str, dict | None]], at: datetime
) -> int:
    """Queue the rendered notices and log every decision, in one transaction.

    A notice another process queued first is left alone (its key is taken); returns how many
    messages were queued.
    """
    queued = [
        Queued(
            n.dedupe_key,
            n.kind.value,
            n.recipient.identity_id,
            n.recipient.chat_id,
            *texts[n.dedupe_key],
        )
        for n in plan_.notices
    ]
    ids = await enqueue(session, queued, at)
    logs: list[dict[str, Any]] = []
    for notice in plan_.notices:
        logs.append(
            _log(
                notice.kind,
                notice.recipient.member_id,
                notice.deadline.id,
                notice.offset,
                notice.unit_id,
                ReminderStatus.queued,
                at,
                ids.get(notice.dedupe_key),
            )
        )
        for older in notice.superseded:
            logs.append(
                _log(
                    notice.kind,
                    notice.recipient.member_id,
                    notice.deadline.id,
                    older,
                    notice.unit_id,
                    ReminderStatus.superseded,
                    at,
                    None,
                )
            )
    for kind, member_id, deadline, offset, unit_id in plan_.skipped:
        logs.append(
            _log(kind, member_id, deadline.id, offset, unit_id, ReminderStatus.skipped, at, None)
        )
    for start in range(0, len(logs), 500):
        await session.exec(
            insert_ignoring_duplicates(session, ReminderLog, logs[start : start + 500])
        )
    if plan_.swept:
        rows = [{"deadline_id": d, "swept_at": at} for d in plan_.swept]
        await session.exec(insert_ignoring_duplicates(session, DeadlineSweep, rows))
    await session.commit()
    return len(ids)


def _log(kind, member_id, deadline_id, offset, unit_id, status, at, outbox_id) -> dict[str, Any]:
    return {
        "kind": kind.value,
        "member_id": member_id,
        "deadline_id": deadline_id,
        "offset_days": offset,
        "unit_id": unit_id,
        "status": status.value,
        "outbox_id": outbox_id,
        "created_at": at,
    }
