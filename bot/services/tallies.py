"""Stored per-unit counts behind every summary, changed in the same transaction as the data.

A summary of a province then adds up one row per unit in scope instead of reading a million
members. Nothing here is a cache: every service that changes what a member contributes to
the counts (joining, blocking, pledging, review, transfer, deactivation, import) wraps the
change in `tracking()`, which measures the member's contribution before and after and adds
the difference, so a rollback takes the counts back with the change. `recount()` rebuilds
units from scratch (bulk import), and `full_recount()` is what the property test compares
against.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from sqlalchemy import bindparam, delete, exists
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import (
    Campaign,
    ChatIdentity,
    Member,
    Pledge,
    PledgeStatus,
    ReviewDecision,
    UnitPledgeTally,
    UnitTally,
)
from bot.read_batch import PreparedRead, Read
from bot.write_batch import Prepared, Write, prepared_guard, prepared_increment

ROSTER_FIELDS = ("members", "active", "on_bot")
PLEDGE_FIELDS = ("on_time", "late", "approved")


@dataclass(frozen=True)
class Contribution:
    """What one member adds to their unit's counts."""

    unit_id: int
    active: bool
    on_bot: bool
    pledges: tuple[tuple[int, str, bool], ...] = ()  # (year, "on_time" | "late", approved)


@dataclass
class Delta:
    roster: defaultdict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    pledges: defaultdict[tuple[int, int], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def add(self, contribution: Contribution, sign: int) -> None:
        roster = self.roster[contribution.unit_id]
        roster["members"] += sign
        if contribution.active:
            roster["active"] += sign
            roster["on_bot"] += sign * contribution.on_bot
            for year, timing, approved in contribution.pledges:
                counts = self.pledges[(contribution.unit_id, year)]
                counts[timing] += sign
                counts["approved"] += sign * approved


async def snapshot(session: AsyncSession, member_ids: Iterable[int]) -> dict[int, Contribution]:
    """Each member's contribution now (flushes pending changes first)."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    await session.flush()
    members = await session.exec(_MEMBERS, params={"ids": ids})
    rows = await session.exec(_SUBMITTED, params={"ids": ids})
    return snapshot_of(members.all(), rows.all())


def snapshot_reads(member_id: int) -> tuple[Read, Read]:
    """`snapshot` of one member as group-path reads (bot.read_batch), for `snapshot_of`."""
    params = {"member_id": member_id}
    return _member_read().bind(params), _submitted_read().bind(params)


def snapshot_of(
    members: Iterable[Sequence], submitted: Iterable[Sequence]
) -> dict[int, Contribution]:
    """`snapshot` from its rows (also those of `snapshot_reads`)."""
    pledges: defaultdict[int, list[tuple[int, str, bool]]] = defaultdict(list)
    for member_id, year, late, review in submitted:
        approved = review == ReviewDecision.approved
        pledges[member_id].append((year, "late" if late else "on_time", approved))
    return {
        member_id: Contribution(unit_id, bool(active), bool(bot), tuple(sorted(pledges[member_id])))
        for member_id, unit_id, active, bot in members
    }


# Built once (an expanding bound list of ids): every submit and join takes two snapshots.
_MEMBER_COLUMNS = (
    Member.id,
    Member.unit_id,
    Member.active,
    exists().where(ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)),
)
_MEMBERS = select(*_MEMBER_COLUMNS).where(col(Member.id).in_(bindparam("ids", expanding=True)))
_SUBMITTED_COLUMNS = (Pledge.member_id, Campaign.year, Pledge.late, Pledge.review)
_SUBMITTED_JOIN = (
    select(*_SUBMITTED_COLUMNS)
    .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
    .where(Pledge.status == PledgeStatus.submitted)
)
_SUBMITTED = _SUBMITTED_JOIN.where(col(Pledge.member_id).in_(bindparam("ids", expanding=True)))


@functools.cache
def _member_read() -> PreparedRead:
    return PreparedRead.of(select(*_MEMBER_COLUMNS).where(Member.id == bindparam("member_id")))


@functools.cache
def _submitted_read() -> PreparedRead:
    return PreparedRead.of(_SUBMITTED_JOIN.where(Pledge.member_id == bindparam("member_id")))


async def apply(
    session: AsyncSession, before: dict[int, Contribution], after: dict[int, Contribution]
) -> None:
    """Add the difference between two snapshots to the stored counts."""
    delta = Delta()
    for contribution in before.values():
        delta.add(contribution, -1)
    for contribution in after.values():
        delta.add(contribution, +1)
    await _add(session, delta)


Filed = tuple[int, str, bool]  # one entry of Contribution.pledges


def after_filing(before: Contribution, was: Filed | None, now: Filed) -> Contribution | None:
    """The member's contribution once a pledge is filed: its entry `was` (None: not filed
    before) becomes `now`. None when `was` is not in `before` (read at another moment)."""
    pledges = list(before.pledges)
    if was is not None:
        if was not in pledges:
            return None
        pledges.remove(was)
    return replace(before, pledges=tuple(sorted([*pledges, now])))


def grouped_writes(member_id: int, before: Contribution, after: Contribution) -> list[Write]:
    """`apply` as grouped writes (bot.write_batch): the counts' change from `before` to
    `after` as increments, behind a guard that the member's unit and standing are still
    those `before` was read with (what the change was computed from)."""
    delta = Delta()
    delta.add(before, -1)
    delta.add(after, +1)
    guard = {"seen_id": member_id, "seen_unit_id": before.unit_id, "seen_active": before.active}
    writes = [_member_guard().bind(guard)]
    for unit_id, counts in sorted(delta.roster.items()):
        if any(counts[name] for name in ROSTER_FIELDS):
            values = {"new_unit_id": unit_id} | {f"new_{n}": counts[n] for n in ROSTER_FIELDS}
            writes.append(_roster_increment().bind(values))
    for (unit_id, year), counts in sorted(delta.pledges.items()):
        if any(counts[name] for name in PLEDGE_FIELDS):
            values = {"new_unit_id": unit_id, "new_year": year}
            writes.append(
                _pledge_increment().bind(values | {f"new_{n}": counts[n] for n in PLEDGE_FIELDS})
            )
    return writes


@functools.cache
def _member_guard() -> Prepared:
    """A group-path guard (bot.write_batch) that a member's unit and standing are as read."""
    return prepared_guard(Member.__table__, match=("id", "unit_id", "active"))


@functools.cache
def _roster_increment() -> Prepared:
    return prepared_increment(UnitTally.__table__, keys=("unit_id",), counters=ROSTER_FIELDS)


@functools.cache
def _pledge_increment() -> Prepared:
    table = UnitPledgeTally.__table__
    return prepared_increment(table, keys=("unit_id", "year"), counters=PLEDGE_FIELDS)


@asynccontextmanager
async def tracking(session: AsyncSession, *member_ids: int) -> AsyncIterator[None]:
    """Wrap a change to these members; their counts follow it in the same transaction.

    A member created inside the block has no id yet: call `counted_new` after flushing it.
    """
    before = await snapshot(session, member_ids)
    yield
    await apply(session, before, await snapshot(session, member_ids))


async def counted_new(session: AsyncSession, *member_ids: int) -> None:
    """Count members that were just created (flushed, so they have ids)."""
    await apply(session, {}, await snapshot(session, member_ids))


def _upsert(session: AsyncSession, model, keys: dict[str, int], counts: Counter[str], names):
    insert = pg_insert if session.bind and session.bind.dialect.name == "postgresql" else None
    statement = (insert or sqlite_insert)(model).values(
        **keys, **{name: counts[name] for name in names}
    )
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: getattr(model, name) + counts[name] for name in names if counts[name] != 0},
    )


async def _add(session: AsyncSession, delta: Delta) -> None:
    for unit_id, counts in sorted(delta.roster.items()):
        if any(counts[name] for name in ROSTER_FIELDS):
            await session.exec(
                _upsert(session, UnitTally, {"unit_id": unit_id}, counts, ROSTER_FIELDS)
            )
    for (unit_id, year), counts in sorted(delta.pledges.items()):
        if any(counts[name] for name in PLEDGE_FIELDS):
            await session.exec(
                _upsert(
                    session,
                    UnitPledgeTally,
                    {"unit_id": unit_id, "year": year},
                    counts,
                    PLEDGE_FIELDS,
                )
            )


async def counted_from_scratch(
    session: AsyncSession, unit_ids: Iterable[int] | None = None
) -> tuple[dict[int, Counter[str]], dict[tuple[int, int], Counter[str]]]:
    """The counts recomputed from members, identities and pledges (all units if None)."""
    units = None if unit_ids is None else sorted(set(unit_ids))
    on_bot = exists().where(
        ChatIdentity.member_id == Member.id, col(ChatIdentity.blocked_at).is_(None)
    )
    query = select(Member.id, Member.unit_id, Member.active, on_bot)
    if units is not None:
        query = query.where(col(Member.unit_id).in_(units))
    delta = Delta()
    contributions: dict[int, Contribution] = {}
    for member_id, unit_id, active, bot in (await session.exec(query)).all():
        contributions[member_id] = Contribution(unit_id, bool(active), bool(bot))
    pledge_query = (
        select(Pledge.member_id, Campaign.year, Pledge.late, Pledge.review)
        .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
        .join(Member, col(Member.id) == Pledge.member_id)
        .where(Pledge.status == PledgeStatus.submitted)
    )
    if units is not None:
        pledge_query = pledge_query.where(col(Member.unit_id).in_(units))
    pledges: defaultdict[int, list[tuple[int, str, bool]]] = defaultdict(list)
    for member_id, year, late, review in (await session.exec(pledge_query)).all():
        pledges[member_id].append(
            (year, "late" if late else "on_time", review == ReviewDecision.approved)
        )
    for member_id, contribution in contributions.items():
        delta.add(
            Contribution(
                contribution.unit_id,
                contribution.active,
                contribution.on_bot,
                tuple(pledges[member_id]),
            ),
            +1,
        )
    return _nonzero(delta.roster), _nonzero(delta.pledges)


async def stored(
    session: AsyncSession,
) -> tuple[dict[int, Counter[str]], dict[tuple[int, int], Counter[str]]]:
    """The stored counts, zero rows left out, in the shape of `counted_from_scratch`."""
    roster = {
        row.unit_id: Counter({name: getattr(row, name) for name in ROSTER_FIELDS})
        for row in (await session.exec(select(UnitTally))).all()
    }
    pledges = {
        (row.unit_id, row.year): Counter({name: getattr(row, name) for name in PLEDGE_FIELDS})
        for row in (await session.exec(select(UnitPledgeTally))).all()
    }
    return _nonzero(roster), _nonzero(pledges)


def _nonzero(counts: dict) -> dict:
    """Drop zero counts (negative ones stay: they would be a bug the test must see)."""
    kept = {key: Counter({n: v for n, v in value.items() if v}) for key, value in counts.items()}
    return {key: value for key, value in kept.items() if value}


async def recount(session: AsyncSession, unit_ids: Iterable[int]) -> None:
    """Rebuild these units' counts from their members (after a bulk import); no commit."""
    units = sorted(set(unit_ids))
    if not units:
        return
    await session.flush()
    for start in range(0, len(units), 500):
        chunk = units[start : start + 500]
        await session.exec(delete(UnitTally).where(col(UnitTally.unit_id).in_(chunk)))
        await session.exec(delete(UnitPledgeTally).where(col(UnitPledgeTally.unit_id).in_(chunk)))
    roster, pledges = await counted_from_scratch(session, units)
    delta = Delta()
    delta.roster.update(roster)
    delta.pledges.update(pledges)
    await _add(session, delta)
