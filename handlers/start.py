"""/start with an invite, consent, phone and name steps; /help, /cancel, /language."""

from __future__ import annotations

from telegram import KeyboardButton, ReplyKeyboardMarkup, ReplyKeyboardRemove, Update
from telegram.ext import ContextTypes

from bot.services import joining, pledges
from bot.services.errors import Refusal
from bot.services.people import set_locale
from bot.services.roles import roles_of
from bot.settings import LOCALES
from handlers import menus
from handlers.common import Turn, answer_query, keyboard, send, show, turn


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start [code]: join with an invite code, or show the menu."""
    async with turn(update, context) as t:
        code = context.args[0] if context.args else ""
        if not code or t.person.inactive:  # a member who left comes back through an officer
            name = "start/menu" if t.person.joined else "start/no_invite"
            if t.person.inactive:
                name = "common/membership_inactive"
            await send(update, context, t.render(name, **await _menu_context(t)))
            await _refresh_menu(context, t)
            return
        try:
            outcome = await joining.start_with_code(
                t.session, t.person, code, t.services.clock.now()
            )
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))
            return
        await _show_outcome(update, context, t, outcome)
        await _refresh_menu(context, t, outcome.member)


async def _refresh_menu(context, t: Turn, member=None) -> None:
    """Officers and leaders get their commands in the menu; others the default menu."""
    member = member or t.person.member
    if member is not None and member.id is not None:
        await menus.refresh(context.bot, t.services, t.session, member.id)


async def consent(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The agree / decline buttons under the personal-data notice."""
    assert update.callback_query is not None
    agreed = update.callback_query.data == "cs:yes"
    await answer_query(update)
    async with turn(update, context) as t:
        try:
            if not agreed:
                await joining.decline_consent(t.session, t.person)
                await show(update, context, t.render("start/consent_declined"))
                return
            outcome = await joining.give_consent(t.session, t.person, t.services.clock.now())
        except Refusal as refusal:
            await show(update, context, t.render(refusal.template, **refusal.context))
            return
        await show(update, context, t.render("start/consent_recorded"))
        await _show_outcome(update, context, t, outcome)
        await _refresh_menu(context, t, outcome.member)


async def contact(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The phone number shared with Telegram's contact button."""
    message = update.effective_message
    assert message is not None and message.contact is not None
    shared = message.contact
    async with turn(update, context) as t:
        try:
            outcome = await joining.share_phone(
                t.session,
                t.person,
                shared.phone_number,
                str(shared.user_id) if shared.user_id else None,
                t.services.clock.now(),
            )
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))
            return
        await _show_outcome(update, context, t, outcome)
        await _refresh_menu(context, t, outcome.member)


async def full_name(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn) -> None:
    """A new member's typed full name (routed here by the text router)."""
    assert update.effective_message is not None
    try:
        outcome = await joining.give_name(
            t.session, t.person, update.effective_message.text or "", t.services.clock.now()
        )
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))
        return
    await _show_outcome(update, context, t, outcome)
    await _refresh_menu(context, t, outcome.member)


async def _show_outcome(
    update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, outcome: joining.JoinOutcome
) -> None:
    step = outcome.step
    if step == joining.Step.ask_consent:
        markup = keyboard([[(t.label("consent_yes"), "cs:yes"), (t.label("consent_no"), "cs:no")]])
        await send(update, context, t.render("start/consent"), markup)
    elif step == joining.Step.ask_phone:
        button = KeyboardButton(t.label("share_phone"), request_contact=True)
        markup = ReplyKeyboardMarkup([[button]], resize_keyboard=True, one_time_keyboard=True)
        await send(update, context, t.render("join/ask_phone", unit=outcome.unit), markup)
    elif step == joining.Step.ask_name:
        await send(
            update, context, t.render("join/ask_name", unit=outcome.unit), ReplyKeyboardRemove()
        )
    else:
        template = "join/already_joined" if step == joining.Step.already_joined else "join/welcome"
        await send(
            update,
            context,
            t.render(template, member=outcome.member, unit=outcome.unit, role=outcome.role.value),
            ReplyKeyboardRemove(),
        )


async def _menu_context(t: Turn) -> dict:
    roles = await roles_of(t.session, t.person.member) if t.person.member else []
    names = await menus.staff_commands(t.session, t.person.member)
    return {
        "member": t.person.member,
        "unit": t.person.unit,
        "roles": [grant.role.value for grant, _ in roles],
        "staff_commands": menus.staff_help(t.services, t.locale, names),
    }


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: what the bot does and the commands this person can use."""
    async with turn(update, context) as t:
        await send(update, context, t.render("help", **await _menu_context(t)))
        await _refresh_menu(context, t)


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel: leave whatever step the chat is in; saved drafts stay."""
    async with turn(update, context) as t:
        cancelled = await pledges.cancel(t.session, t.person)
        name = "common/cancelled" if cancelled else "common/nothing_to_cancel"
        await send(update, context, t.render(name), ReplyKeyboardRemove())


async def language(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/language: choose Vietnamese or English for this chat."""
    async with turn(update, context) as t:
        markup = keyboard([[(t.label("lang_vi"), "lang:vi"), (t.label("lang_en"), "lang:en")]])
        await send(update, context, t.render("language/choose"), markup)


async def language_chosen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A language button: anything but a known locale is a forged button."""
    assert update.callback_query is not None and update.callback_query.data is not None
    locale = update.callback_query.data.removeprefix("lang:")
    async with turn(update, context) as t:
        if locale not in LOCALES:
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        await answer_query(update)
        await set_locale(t.session, t.person.identity, locale)
        t.locale = locale
        await show(update, context, t.render("language/set"))
        await _refresh_menu(context, t)
