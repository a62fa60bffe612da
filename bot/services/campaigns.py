"""Campaigns in force: applying a shipped campaign to a unit and finding a member's."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Campaign, Deadline, Lesson, OwedBy, Unit
from bot.services import deadlines as deadline_rules
from bot.services.errors import Refusal
from bot.services.units import ancestor_ids

if TYPE_CHECKING:
    from bot.catalog import Catalog
    from bot.readcache import ReadCache

T = TypeVar("T")


@dataclass(frozen=True)
class CampaignInForce:
    campaign: Campaign
    unit: Unit  # the unit that put it in force (the member's own or an ancestor)
    deadlines: list[Deadline]
    lesson_count: int

    def deadline(self, name: str) -> Deadline | None:
        return next((d for d in self.deadlines if d.name == name), None)

    @property
    def pledge_deadline(self) -> Deadline | None:
        return self.deadline("pledge")

    def sections(self) -> list[dict[str, Any]]:
        return self.campaign.pledge_sections


async def apply_campaign(
    session: AsyncSession,
    catalog: Catalog,
    catalog_id: str,
    unit: Unit,
    at: datetime,
    deadline_overrides: dict[str, date] | None = None,
    reminder_override: dict[str, Any] | None = None,
) -> Campaign:
    """Put a shipped campaign in force for `unit`'s subtree; applying again refreshes it.

    A unit's own date for a deadline (`--deadline pledge=2024-04-12`) is the last day that
    still counts, so it is stored inclusive. An override may also add a deadline the
    document did not give, but only a known kind (pledge, reports), never an invented name.
    """
    try:
        spec = catalog.campaign(catalog_id)
    except KeyError:
        raise Refusal("cli/campaign_unknown", catalog_id=catalog_id) from None
    term = catalog.terms.get(spec.term) if spec.term else None
    overrides = dict(deadline_overrides or {})
    campaign = (
        await session.exec(
            select(Campaign).where(Campaign.unit_id == unit.id, Campaign.catalog_id == spec.id)
        )
    ).first()
    if campaign is None:
        campaign = Campaign(
            catalog_id=spec.id,
            unit_id=unit.id,
            year=spec.year,
            issuer="",
            document="",
            topic="",
            topic_en="",
            term_topic="",
            term_topic_en="",
        )
    campaign.year = spec.year
    campaign.issuer = spec.issuer
    campaign.issuer_en = spec.issuer_en
    campaign.document = spec.document
    campaign.document_en = spec.document_en
    campaign.topic = spec.topic
    campaign.topic_en = spec.topic_en
    campaign.term_topic = term.topic if term else ""
    campaign.term_topic_en = term.topic_en if term else ""
    campaign.pledge_sections = [section.model_dump(mode="json") for section in spec.pledge_sections]
    # A unit's own reminder policy is stored whole; without one the shipped policy applies.
    campaign.reminder_policy = (
        _unit_policy(catalog, spec.id, reminder_override) if reminder_override else {}
    )
    campaign.applied_at = at
    session.add(campaign)
    await session.flush()

    await session.exec(delete(Deadline).where(col(Deadline.campaign_id) == campaign.id))
    await session.exec(delete(Lesson).where(col(Lesson.campaign_id) == campaign.id))
    known = {d.name: d for d in spec.deadlines}
    for name in overrides:
        if name not in known and name not in KNOWN_DEADLINE_KINDS:
            raise Refusal(
                "cli/deadline_unknown",
                name=name,
                known=", ".join(sorted(set(known) | set(KNOWN_DEADLINE_KINDS))),
            )
    for name, d in known.items():
        override = overrides.pop(name, None)
        session.add(
            Deadline(
                campaign_id=campaign.id,
                name=name,
                title_vi=d.title.vi,
                title_en=d.title.en,
                due_date=override or d.date,
                inclusive=True if override else d.inclusive,
                owed_by=OwedBy(d.owed_by),
                source_text=d.source_text,
                set_by_unit=bool(override),
            )
        )
    for name, day in overrides.items():
        title_vi, title_en, owed_by = KNOWN_DEADLINE_KINDS[name]
        session.add(
            Deadline(
                campaign_id=campaign.id,
                name=name,
                title_vi=title_vi,
                title_en=title_en,
                due_date=day,
                inclusive=True,
                owed_by=owed_by,
                source_text="",
                set_by_unit=True,
            )
        )
    for position, lesson in enumerate(spec.lessons):
        session.add(
            Lesson(
                campaign_id=campaign.id,
                position=position,
                key=lesson.key,
                title_vi=lesson.title.vi,
                title_en=lesson.title.en,
                body_vi=lesson.body.vi,
                body_en=lesson.body.en,
            )
        )
    await session.commit()
    return campaign


def _unit_policy(catalog: Catalog, catalog_id: str, override: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        policy = catalog.reminder_policy(catalog_id).merged(override)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise Refusal("cli/reminder_policy_invalid", problems=problems) from None
    return policy.model_dump(mode="json")


# Deadlines a unit may set itself when its document gives none (name -> titles, owed by).
KNOWN_DEADLINE_KINDS: dict[str, tuple[str, str, OwedBy]] = {
    "pledge": (
        "Nộp bản đăng ký học tập và làm theo",
        "Hand in your personal pledge",
        OwedBy.member,
    ),
    "study": ("Hoàn thành học tập chuyên đề", "Finish studying the topic", OwedBy.unit),
    "study_report": ("Báo cáo kết quả học tập", "Report on the study", OwedBy.unit),
    "six_month_report": ("Báo cáo 6 tháng", "Six-month report", OwedBy.unit),
    "annual_report": ("Báo cáo 1 năm", "Annual report", OwedBy.unit),
}


@dataclass
class ContentCache:
    """A campaign's content (row, owner unit, deadlines, lessons) kept in memory.

    Content changes only when a campaign is applied again, which sets a new `applied_at`;
    entries are keyed by (campaign id, applied_at), so each lookup still asks the database
    which campaigns reach the unit (one small query) and never serves content another
    process replaced. Cached rows are detached: read them, never add them to a session.
    """

    entries: dict[tuple[int, object], tuple[CampaignInForce, dict[int, Lesson]]] = field(
        default_factory=dict
    )
    by_campaign: dict[int, tuple[int, object]] = field(default_factory=dict)
    # Values computed from one entry's content alone (a lesson page rendered in a
    # language), dropped with the entry when the campaign is applied again.
    derived_values: dict[tuple[int, object], dict[Hashable, Any]] = field(default_factory=dict)

    def derived(self, campaign_id: int, key: Hashable, build: Callable[[], T]) -> T:
        """`build()`, kept while the campaign's cached content stands; built afresh (and
        not kept) when the campaign is not cached."""
        entry_key = self.by_campaign.get(campaign_id)
        if entry_key is None or entry_key not in self.entries:
            return build()
        values = self.derived_values.setdefault(entry_key, {})
        if key not in values:
            values[key] = build()
        return values[key]


async def in_force_for_unit(
    session: AsyncSession,
    unit: Unit,
    today: date,
    *,
    cache: ContentCache | None = None,
    heads_cache: ReadCache | None = None,
) -> CampaignInForce | None:
    """The campaign reaching `unit`: the latest year not after today, set nearest the unit.

    A lower unit's own campaign overrides its parent's for the same year; a newer year set
    higher up still wins over last year's set lower down. `heads_cache` spares the query
    of which campaigns reach the unit (bot.readcache), which it hears of every change to.
    """
    chain = ancestor_ids(unit)
    depth_rank = {unit_id: rank for rank, unit_id in enumerate(chain)}
    if cache is not None:
        heads_key = (tuple(chain), today.year)
        heads = heads_cache.campaign(heads_key) if heads_cache is not None else None
        if heads is None:
            generation = heads_cache.generation() if heads_cache is not None else 0
            heads = (
                await session.exec(
                    select(
                        Campaign.id, Campaign.unit_id, Campaign.year, Campaign.applied_at
                    ).where(col(Campaign.unit_id).in_(chain), Campaign.year <= today.year)
                )
            ).all()
            if heads_cache is not None:
                heads_cache.put_campaign(heads_key, heads, generation)
        if not heads:
            return None
        campaign_id, _, _, applied_at = min(heads, key=lambda h: (-h[2], depth_rank[h[1]]))
        key = (campaign_id, applied_at)
        entry = cache.entries.get(key)
        if entry is None:
            in_force = await _load_in_force(session, campaign_id)
            lessons = await session.exec(select(Lesson).where(Lesson.campaign_id == campaign_id))
            old = cache.by_campaign.pop(campaign_id, None)
            if old is not None:
                cache.entries.pop(old, None)
                cache.derived_values.pop(old, None)
            entry = cache.entries[key] = (in_force, {x.position: x for x in lessons.all()})
            cache.by_campaign[campaign_id] = key
        return entry[0]
    rows = (
        await session.exec(
            select(Campaign, Unit)
            .join(Unit, col(Unit.id) == Campaign.unit_id)
            .where(col(Campaign.unit_id).in_(chain), Campaign.year <= today.year)
        )
    ).all()
    if not rows:
        return None
    campaign, owner = min(rows, key=lambda row: (-row[0].year, depth_rank[row[0].unit_id]))
    return await _complete(session, campaign, owner)


async def _load_in_force(session: AsyncSession, campaign_id: int) -> CampaignInForce:
    campaign, owner = (
        await session.exec(
            select(Campaign, Unit)
            .join(Unit, col(Unit.id) == Campaign.unit_id)
            .where(Campaign.id == campaign_id)
        )
    ).one()
    return await _complete(session, campaign, owner)


async def _complete(session: AsyncSession, campaign: Campaign, owner: Unit) -> CampaignInForce:
    deadlines = (
        await session.exec(
            select(Deadline)
            .where(Deadline.campaign_id == campaign.id)
            .order_by(col(Deadline.due_date))
        )
    ).all()
    lesson_count = len(
        (await session.exec(select(Lesson.id).where(Lesson.campaign_id == campaign.id))).all()
    )
    return CampaignInForce(
        campaign=campaign, unit=owner, deadlines=list(deadlines), lesson_count=lesson_count
    )


async def lesson_at(
    session: AsyncSession, campaign_id: int, position: int, *, cache: ContentCache | None = None
) -> Lesson | None:
    """A lesson by position; from the cache when `in_force_for_unit` just filled it."""
    key = cache.by_campaign.get(campaign_id) if cache is not None else None
    if cache is not None and key is not None and key in cache.entries:
        return cache.entries[key][1].get(position)
    return (
        await session.exec(
            select(Lesson).where(Lesson.campaign_id == campaign_id, Lesson.position == position)
        )
    ).first()


@dataclass(frozen=True)
class Upcoming:
    """A deadline still ahead, with its last day and the whole days left to it."""

    deadline: Deadline
    last_day: date
    days_left: int


def upcoming(in_force: CampaignInForce, today: date) -> list[Upcoming]:
    """The deadlines still ahead of `today`, soonest first."""
    return [
        Upcoming(d, deadline_rules.last_day(d), deadline_rules.days_left(d, today))
        for d in in_force.deadlines
        if deadline_rules.is_ahead(d, today)
    ]


async def list_applied(session: AsyncSession) -> list[tuple[Campaign, Unit]]:
    rows = await session.exec(select(Campaign, Unit).join(Unit, col(Unit.id) == Campaign.unit_id))
    return list(rows.all())
