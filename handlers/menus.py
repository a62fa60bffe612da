"""Role-scoped command menus: officers and leaders see their own commands in their chat."""

from __future__ import annotations

import logging

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Bot, BotCommand, BotCommandScopeChat
from telegram.error import TelegramError

from bot.context import Services
from bot.models import ChatIdentity, Member
from bot.services.authorization import Action
from bot.services.roles import allowed_actions
from handlers.common import CHANNEL, end_transaction

logger = logging.getLogger(__name__)

# The officer/leader commands, in menu order, and the action each one needs.
STAFF_COMMANDS = (
    ("pending", Action.view_pending),
    ("enterpledge", Action.review_pledge),
    ("summary", Action.view_summary),
    ("broadcast", Action.broadcast),
    ("invite", Action.invite),
    ("members", Action.manage_roster),
    ("roles", Action.grant_role),
)


def descriptions(svc: Services, locale: str) -> dict[str, str]:
    return svc.renderer.pairs("commands", locale)


async def staff_commands(session: AsyncSession, member: Member | None) -> list[str]:
    """The officer/leader commands this member's roles allow, in menu order."""
    allowed = await allowed_actions(session, member)
    return [name for name, action in STAFF_COMMANDS if action in allowed]


def staff_help(svc: Services, locale: str, names: list[str]) -> list[tuple[str, str]]:
    described = descriptions(svc, locale)
    return [(name, described[name]) for name in names]


def menu_for(svc: Services, locale: str, names: list[str]) -> list[BotCommand]:
    from bot.app import MENU_COMMANDS

    described = descriptions(svc, locale)
    base = [name for name in MENU_COMMANDS if name not in ("language", "cancel")]
    tail = [name for name in MENU_COMMANDS if name in ("language", "cancel")]
    return [BotCommand(name, described[name]) for name in (*base, *names, *tail)]


async def refresh(bot: Bot, svc: Services, session: AsyncSession, member_id: int) -> None:
    """Set (or clear) the chat-scoped menu of every Telegram chat of this member.

    Members without a role see the bot's default menu, so their chat scope is cleared.
    A failure only leaves an older menu behind: every command checks the role again.
    """
    member = await session.get(Member, member_id)
    names = await staff_commands(session, member) if member is not None else []
    identities = (
        await session.exec(
            select(ChatIdentity).where(
                ChatIdentity.member_id == member_id, ChatIdentity.channel == CHANNEL
            )
        )
    ).all()
    chats = [(identity.chat_id, identity.locale or svc.settings.locale) for identity in identities]
    await end_transaction()
    for chat_id, locale in chats:
        scope = BotCommandScopeChat(int(chat_id))
        try:
            if names:
                await bot.set_my_commands(menu_for(svc, locale, names), scope=scope)
            else:
                await bot.delete_my_commands(scope=scope)
        except TelegramError:
            logger.warning("could not update a chat's command menu", exc_info=True)
