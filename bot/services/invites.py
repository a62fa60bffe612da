"""Invite codes: creating them and checking one a person brings."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.models import Invite, Member, Role, Unit
from bot.services.errors import Refusal

DEFAULT_VALID_DAYS = 30
# Telegram's deep-link payload allows A-Z a-z 0-9 _ - and up to 64 characters.
CODE_BYTES = 12  # 16 URL-safe characters, 96 bits: not guessable


async def create_invite(
    session: AsyncSession,
    unit: Unit,
    at: datetime,
    role: Role = Role.member,
    max_uses: int | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    member: Member | None = None,
) -> Invite:
    """A new invite. Without `member` it is unit-wide and asks the joiner's phone number."""
    if max_uses is not None and max_uses < 1:
        raise Refusal("cli/invite_bad_uses")
    if valid_days < 1:
        raise Refusal("cli/invite_bad_days")
    invite = Invite(
        code=secrets.token_urlsafe(CODE_BYTES),
        unit_id=unit.id,
        role=role,
        member_id=member.id if member else None,
        max_uses=1 if member else max_uses,
        expires_at=at + timedelta(days=valid_days),
        created_at=at,
    )
    session.add(invite)
    await session.commit()
    return invite


def deep_link(bot_username: str, code: str) -> str:
    return f"https://t.me/{bot_username}?start={code}"


async def usable_invite(session: AsyncSession, code: str, at: datetime) -> Invite:
    """The invite behind `code`, or a refusal saying why it cannot be used."""
    code = code.strip()
    invite = None
    if code and len(code) <= 64:
        invite = (await session.exec(select(Invite).where(Invite.code == code))).first()
    if invite is None:
        raise Refusal("start/invite_unknown")
    expires_at = invite.expires_at
    if expires_at is not None and expires_at.tzinfo is None:  # SQLite returns naive UTC
        from datetime import UTC

        expires_at = expires_at.replace(tzinfo=UTC)
    if invite.revoked_at is not None or (expires_at is not None and expires_at <= at):
        raise Refusal("start/invite_expired")
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        raise Refusal("start/invite_used_up")
    return invite


async def invite_by(
    session: AsyncSession, actor: Member | None, unit: Unit, role: Role, at: datetime
) -> Invite:
    """An invite made in chat: members' invites need Action.invite at the unit, officer and
    leader invites the right to grant that role there (the same rule as granting it)."""
    from bot.services.authorization import Action, may
    from bot.services.roles import may_grant

    if not await may(session, actor, Action.invite, unit):
        raise Refusal("invite/out_of_scope")
    if role != Role.member and not await may_grant(session, actor, unit, role):
        raise Refusal("roles/not_yours", unit=unit, role=role.value)
    return await create_invite(session, unit, at, role)


QR_SCALE = 10


def qr_png(link: str) -> bytes:
    """The link as a QR code PNG, large enough to print for a notice board (CPU work: run it
    off the event loop)."""
    import io

    import segno

    buffer = io.BytesIO()
    segno.make(link, error="m").save(buffer, kind="png", scale=QR_SCALE, border=4)
    return buffer.getvalue()
