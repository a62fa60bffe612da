"""The tables. Times are stored in UTC; local dates are computed through the Clock."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc_column(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=nullable)


class UnitLevel(StrEnum):
    """The levels of the union tree, top to bottom."""

    confederation = "confederation"  # Tổng LĐLĐ Việt Nam
    province = "province"  # LĐLĐ tỉnh/thành phố
    district = "district"  # LĐLĐ quận/huyện, công đoàn ngành
    grassroots = "grassroots"  # công đoàn cơ sở (CĐCS)
    team = "team"  # tổ công đoàn


class Role(StrEnum):
    member = "member"
    officer = "officer"
    leader = "leader"


class OwedBy(StrEnum):
    member = "member"
    unit = "unit"


class PledgeStatus(StrEnum):
    draft = "draft"
    submitted = "submitted"


class ReviewDecision(StrEnum):
    approved = "approved"
    returned = "returned"  # back to the member with a comment and a date to revise by


class Unit(SQLModel, table=True):
    """A node of the union tree; `path` ("/1/4/9/") makes a subtree one indexed prefix query."""

    # PostgreSQL uses a btree for LIKE 'prefix%' only with the pattern operator class.
    __table_args__ = (
        Index("ix_unit_path_pattern", "path", postgresql_ops={"path": "varchar_pattern_ops"}),
    )

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, index=True, max_length=64)
    name: str = Field(max_length=255)
    level: UnitLevel = Field(max_length=32)
    parent_id: int | None = Field(default=None, foreign_key="unit.id", index=True)
    path: str = Field(default="", index=True, max_length=1024)
    depth: int = 0


class Member(SQLModel, table=True):
    """A union member (đoàn viên); names are NFC, `name_key` is the diacritic-free search key."""

    __table_args__ = (Index("ix_member_unit_active", "unit_id", "active"),)

    id: int | None = Field(default=None, primary_key=True)
    unit_id: int = Field(foreign_key="unit.id")
    full_name: str = Field(max_length=120)
    name_key: str = Field(default="", index=True, max_length=120)
    phone: str | None = Field(default=None, unique=True, max_length=20)
    member_code: str | None = Field(default=None, index=True, max_length=64)
    position: str | None = Field(default=None, max_length=120)  # chức vụ
    birth_date: date | None = None
    gender: str | None = Field(default=None, max_length=16)
    email: str | None = Field(default=None, max_length=255)
    # False once the member leaves the union: out of every count and reminder, history kept.
    active: bool = True
    left_at: datetime | None = _utc_column()
    reminders_muted_until: date | None = None  # leave, sickness: no reminders up to this day
    created_at: datetime | None = _utc_column()
    updated_at: datetime | None = _utc_column()


class MemberEventKind(StrEnum):
    imported = "imported"
    updated = "updated"
    transferred = "transferred"
    deactivated = "deactivated"
    reactivated = "reactivated"


class MemberEvent(SQLModel, table=True):
    """What happened to a member's roster entry, by whom and when: lifecycle history is kept."""

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: MemberEventKind = Field(max_length=16)
    from_unit_id: int | None = Field(default=None, foreign_key="unit.id")
    to_unit_id: int | None = Field(default=None, foreign_key="unit.id")
    by_member_id: int | None = Field(default=None, foreign_key="member.id")  # None: the CLI
    note: str | None = Field(default=None, max_length=255)
    at: datetime | None = _utc_column()


class ChatIdentity(SQLModel, table=True):
    """One account on one channel (Telegram now, Zalo later), linked to a member once joined."""

    __table_args__ = (UniqueConstraint("channel", "external_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(default="telegram", max_length=16)
    external_user_id: str = Field(max_length=64)
    chat_id: str = Field(max_length=64)
    member_id: int | None = Field(default=None, foreign_key="member.id", index=True)
    locale: str | None = Field(default=None, max_length=8)
    consent_at: datetime | None = _utc_column()
    blocked_at: datetime | None = _utc_column()
    created_at: datetime | None = _utc_column()


class ChatState(SQLModel, table=True):
    """Where a chat is in a multi-step flow; a row, so a restart or another process continues.

    `version` grows with every step; buttons carry it, so a stale or forged button is seen.
    """

    identity_id: int = Field(foreign_key="chatidentity.id", primary_key=True)
    flow: str = Field(max_length=32)
    step: int = 0
    version: int = 0
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime | None = _utc_column()


class Invite(SQLModel, table=True):
    """An unguessable code that brings a person into a unit with a role."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, index=True, max_length=64)
    unit_id: int = Field(foreign_key="unit.id")
    role: Role = Field(default=Role.member, max_length=16)
    member_id: int | None = Field(default=None, foreign_key="member.id")
    max_uses: int | None = None
    uses: int = 0
    expires_at: datetime | None = _utc_column()
    revoked_at: datetime | None = _utc_column()
    created_at: datetime | None = _utc_column()


class RoleGrant(SQLModel, table=True):
    """An officer or leader role held at a unit, reaching its whole subtree."""

    __table_args__ = (Index("ix_rolegrant_member_active", "member_id", "revoked_at"),)

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id")
    unit_id: int = Field(foreign_key="unit.id", index=True)
    role: Role = Field(max_length=16)
    granted_at: datetime | None = _utc_column()
    granted_by_member_id: int | None = Field(default=None, foreign_key="member.id")
    revoked_at: datetime | None = _utc_column()
    revoked_by_member_id: int | None = Field(default=None, foreign_key="member.id")


class Campaign(SQLModel, table=True):
    """A shipped campaign put in force at a unit; it reaches the subtree unless overridden."""

    __table_args__ = (UniqueConstraint("unit_id", "catalog_id"),)

    id: int | None = Field(default=None, primary_key=True)
    catalog_id: str = Field(max_length=64)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    year: int
    issuer: str = Field(max_length=255)
    issuer_en: str = Field(default="", max_length=255)
    document: str = Field(max_length=255)
    document_en: str = Field(default="", max_length=255)
    topic: str
    topic_en: str
    term_topic: str
    term_topic_en: str
    pledge_sections: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    reminder_policy: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    applied_at: datetime | None = _utc_column()


class Deadline(SQLModel, table=True):
    """A named deadline: a local date, inclusive or not, owed by each member or by the unit."""

    __table_args__ = (UniqueConstraint("campaign_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    name: str = Field(max_length=64)
    title_vi: str = Field(max_length=255)
    title_en: str = Field(max_length=255)
    due_date: date
    inclusive: bool
    owed_by: OwedBy = Field(max_length=16)
    source_text: str = Field(default="", max_length=500)
    set_by_unit: bool = False


class Lesson(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    position: int
    key: str = Field(max_length=64)
    title_vi: str
    title_en: str
    body_vi: str
    body_en: str


class Pledge(SQLModel, table=True):
    """A member's pledge for one campaign: the working draft plus the submitted versions."""

    __table_args__ = (UniqueConstraint("member_id", "campaign_id"),)

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    status: PledgeStatus = Field(default=PledgeStatus.draft, max_length=16)
    draft: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    current_version: int = 0
    first_submitted_at: datetime | None = _utc_column()
    late: bool = False
    # The officer's latest decision on the version in force; None: awaiting review.
    review: ReviewDecision | None = Field(default=None, max_length=16)
    revise_by: date | None = None  # a returned pledge may be revised up to this local day
    updated_at: datetime | None = _utc_column()


class PledgeReview(SQLModel, table=True):
    """Every review decision, kept: which version, who, when, and what they said."""

    id: int | None = Field(default=None, primary_key=True)
    pledge_id: int = Field(foreign_key="pledge.id", index=True)
    version: int
    decision: ReviewDecision = Field(max_length=16)
    comment: str | None = None
    revise_by: date | None = None
    reviewer_member_id: int = Field(foreign_key="member.id")
    decided_at: datetime | None = _utc_column()


class PledgeVersion(SQLModel, table=True):
    """Every submission is kept; the highest version is the pledge in force."""

    __table_args__ = (UniqueConstraint("pledge_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    pledge_id: int = Field(foreign_key="pledge.id", index=True)
    version: int
    sections: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    submitted_at: datetime | None = _utc_column()
    late: bool = False
    entered_by_member_id: int | None = Field(default=None, foreign_key="member.id")


class ProcessedUpdate(SQLModel, table=True):
    """Update ids already handled, so Telegram's retries have one effect."""

    channel: str = Field(default="telegram", primary_key=True, max_length=16)
    update_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    # Indexed so pruning finds the old rows in bounded steps (bot.services.updates.prune);
    # ids come in time order, so each insert only appends at the index's end.
    processed_at: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), index=True
    )
    # When its handling ended with the replies sent. A row without it had its effects
    # committed by a process that did not get to answer (it died first): a redelivery then
    # shows the person where they are instead of nothing.
    answered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class OutboxStatus(StrEnum):
    pending = "pending"
    claimed = "claimed"
    sent = "sent"
    failed = "failed"
    blocked = "blocked"
    cancelled = "cancelled"


class OutboxMessage(SQLModel, table=True):
    """A message the bot sends on its own: claimed, sent, then marked, exactly once.

    `dedupe_key` names what the message is for ("rem:12:3:m45"); the unique index makes a
    second process's (or a second tick's) attempt to queue it again a no-op.
    """

    __table_args__ = (Index("ix_outbox_due", "status", "not_before"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(unique=True, max_length=160)
    kind: str = Field(max_length=32)
    identity_id: int | None = Field(default=None, foreign_key="chatidentity.id", index=True)
    chat_id: str = Field(max_length=64)
    text: str
    reply_markup: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    status: OutboxStatus = Field(default=OutboxStatus.pending, max_length=16)
    attempts: int = 0
    not_before: datetime | None = _utc_column()
    claimed_until: datetime | None = _utc_column()
    claimed_by: str | None = Field(default=None, max_length=64)
    created_at: datetime | None = _utc_column()
    sent_at: datetime | None = _utc_column()
    last_error: str | None = Field(default=None, max_length=500)
    photo: str | None = Field(default=None, max_length=255)  # a Telegram file_id: sendPhoto
    broadcast_id: int | None = Field(default=None, foreign_key="broadcast.id", index=True)


class ReminderStatus(StrEnum):
    queued = "queued"  # in the outbox; its delivery status is there
    superseded = "superseded"  # a later offset was due at the same time: one message, not a burst
    skipped = "skipped"  # its chance passed (bot down until after the last day)


class NoticeKind(StrEnum):
    reminder = "reminder"  # before a deadline, to whoever still owes it
    late = "late"  # once after the deadline, to a member who still owes it
    late_list = "late_list"  # once after the deadline, to each officer: their unit's late list
    digest = "digest"  # to leaders, some days before and after each deadline


class ReminderLog(SQLModel, table=True):
    """One row per (kind, person, deadline, offset, unit): each notice is decided once, ever.

    `offset_days` counts days before the deadline's last day (negative: after it). `unit_id`
    is 0 for a member's own deadline and otherwise the unit the notice is about, so the
    unique key has no NULLs on either database.
    """

    __table_args__ = (
        UniqueConstraint("kind", "member_id", "deadline_id", "offset_days", "unit_id"),
        Index("ix_reminderlog_member", "member_id", "deadline_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: NoticeKind = Field(default=NoticeKind.reminder, max_length=16)
    member_id: int = Field(foreign_key="member.id")
    deadline_id: int = Field(foreign_key="deadline.id")
    offset_days: int
    unit_id: int = 0
    status: ReminderStatus = Field(max_length=16)
    outbox_id: int | None = Field(default=None, foreign_key="outboxmessage.id")
    created_at: datetime | None = _utc_column()


class DeadlineSweep(SQLModel, table=True):
    """A deadline whose missed reminders were recorded as skipped, so the sweep runs once."""

    deadline_id: int = Field(foreign_key="deadline.id", primary_key=True)
    swept_at: datetime | None = _utc_column()


class BroadcastAudience(StrEnum):
    subtree = "subtree"  # everyone active in the sender's unit and below
    unit = "unit"  # one sub-unit's subtree
    not_pledged = "not_pledged"
    not_joined = "not_joined"  # cannot be reached by the bot: reported, not sent


class BroadcastStatus(StrEnum):
    scheduled = "scheduled"  # waits for send_at; the scheduler tick queues it
    queued = "queued"  # one outbox row per reachable recipient
    cancelled = "cancelled"
    done = "done"  # every row settled and the delivery report sent


class Broadcast(SQLModel, table=True):
    """An officer's notice to an audience in their subtree, delivered through the outbox."""

    id: int | None = Field(default=None, primary_key=True)
    sender_member_id: int = Field(foreign_key="member.id", index=True)
    sender_identity_id: int | None = Field(default=None, foreign_key="chatidentity.id")
    unit_id: int = Field(foreign_key="unit.id")  # the audience lies in this unit's subtree
    audience: BroadcastAudience = Field(max_length=16)
    text: str = ""
    photo: str | None = Field(default=None, max_length=255)  # a Telegram file_id
    status: BroadcastStatus = Field(max_length=16)
    send_at: datetime | None = _utc_column()
    recipients: int = 0  # rows queued
    # Active members in the audience with no chat identity: listed in the report.
    unreachable_member_ids: list[int] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime | None = _utc_column()
    queued_at: datetime | None = _utc_column()
    cancelled_at: datetime | None = _utc_column()
    reported_at: datetime | None = _utc_column()


class UnitTally(SQLModel, table=True):
    """Stored counts of a unit's own members (not its subtree), kept in the same transaction
    as every change, so a summary costs O(units in scope) and is never stale."""

    unit_id: int = Field(foreign_key="unit.id", primary_key=True)
    members: int = 0  # on the roster, active or not
    active: int = 0
    on_bot: int = 0  # active, linked to a chat identity that has not blocked the bot


class UnitPledgeTally(SQLModel, table=True):
    """Stored pledge counts of a unit's own active members for one campaign year."""

    unit_id: int = Field(foreign_key="unit.id", primary_key=True)
    year: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    on_time: int = 0
    late: int = 0
    approved: int = 0


class ReportKind(StrEnum):
    six_month = "six_month"  # sơ kết 6 tháng
    annual = "annual"  # tổng kết năm


class UnitReport(SQLModel, table=True):
    """A report a unit sent up the tree: the generated draft or the signed file uploaded."""

    __table_args__ = (Index("ix_unitreport_unit_year_kind", "unit_id", "year", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    unit_id: int = Field(foreign_key="unit.id")
    year: int
    kind: ReportKind = Field(max_length=16)
    generated: bool  # True: the bot's draft as is; False: a file the leader uploaded
    filename: str = Field(max_length=255)
    content: bytes | None = Field(default=None, sa_type=LargeBinary)
    file_id: str | None = Field(default=None, max_length=255)  # Telegram's, for an upload
    sent_by_member_id: int = Field(foreign_key="member.id")
    sent_at: datetime | None = _utc_column()
