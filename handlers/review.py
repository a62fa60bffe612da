"""Officers' review of pledges (rv: buttons), paper pledges (/enterpledge), printable forms."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from telegram import InputFile, Update
from telegram.ext import ContextTypes

from bot.context import Services
from bot.models import ReviewDecision
from bot.services import pledges, review
from bot.services.errors import Refusal
from bot.services.mute import parse_day
from bot.telegram_html import split_message
from bot.text import search_key
from handlers.common import (
    Turn,
    answer_query,
    button_label,
    end_transaction,
    keyboard,
    send,
    show,
    stacked,
    turn,
)


def composer(svc: Services) -> review.Compose:
    """The member's notice of a decision, in their language, with the button that helps."""

    def compose(locale: str, notice: review.ReviewNotice) -> tuple[str, dict[str, Any] | None]:
        locale = locale or svc.settings.locale
        returned = notice.decision == ReviewDecision.returned
        name = "review/notice_returned" if returned else "review/notice_approved"
        text = split_message(svc.renderer.text(name, locale, notice=notice))[0]
        key, data = ("open_pledge", "pl:open") if returned else ("print_pledge", "rv:mine")
        label = button_label(svc, locale, key)
        return text, {"inline_keyboard": [[{"text": label, "callback_data": data}]]}

    return compose


async def _refuse(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, refusal: Refusal):
    """A stale button gets a pop-up; any other refusal is explained in the chat."""
    text = t.render(refusal.template, **refusal.context)
    if refusal.template == "common/stale_button":
        await answer_query(update, text, alert=True)
        return
    await answer_query(update)
    await send(update, context, text)


def _nav(prefix: str, unit_id: int, page: review.Page, t: Turn) -> list[tuple[str, str]]:
    row = []
    if page.page > 0:
        row.append((t.label("page_prev"), f"rv:{prefix}p:{unit_id}:{page.page - 1}"))
    if page.page < page.pages - 1:
        row.append((t.label("page_next"), f"rv:{prefix}p:{unit_id}:{page.page + 1}"))
    return row


async def _not_joined(update, context, t: Turn, unit_id: int, page: int, edit: bool) -> None:
    lists = await review.lists_for(t.session, t.person.member, unit_id, t.services.clock.today())
    shown = review.page_of(lists.not_joined, page, review.NAMES_PAGE)
    rows = [r for r in [_nav("nj", unit_id, shown, t)] if r]
    await answer_query(update)
    reply = show if edit else send
    await reply(
        update,
        context,
        t.render("review/not_joined", lists=lists, page=shown),
        keyboard(rows) if rows else None,
    )


async def _awaiting(update, context, t: Turn, unit_id: int, page: int, edit: bool) -> None:
    today = t.services.clock.today()
    lists, shown = await review.awaiting_page(t.session, t.person.member, unit_id, page, today)
    icon = t.label("open_review")
    rows = [
        [(f"{icon} {shown.first_index + i}. {row.member.full_name}", f"rv:o:{row.pledge_id}")]
        for i, row in enumerate(shown.items)
        if row.readable
    ]
    nav = _nav("aw", unit_id, shown, t)
    if nav:
        rows.append(nav)
    await answer_query(update)
    reply = show if edit else send
    await reply(
        update,
        context,
        t.render("review/awaiting", lists=lists, page=shown),
        keyboard(rows) if rows else None,
    )


async def _open(update, context, t: Turn, pledge_id: int) -> None:
    view = await review.screen(t.session, t.person.member, pledge_id)
    rows = []
    if not view.decided:
        rows.append(
            [
                (t.label("approve"), f"rv:ok:{view.pledge_id}:{view.version}"),
                (t.label("return"), f"rv:ret:{view.pledge_id}:{view.version}"),
            ]
        )
    rows.append([(t.label("print_pledge"), f"rv:doc:{view.pledge_id}")])
    await answer_query(update)
    await send(update, context, t.render("review/screen", view=view), keyboard(rows))


async def _approve(update, context, t: Turn, pledge_id: int, version: int) -> None:
    assert t.person.member is not None
    decided = await review.approve(
        t.session,
        t.person.member,
        pledge_id,
        version,
        t.services.clock.now(),
        composer(t.services),
    )
    await answer_query(update)
    await send(update, context, t.render("review/approved", decided=decided))


async def _start_return(update, context, t: Turn, pledge_id: int, version: int) -> None:
    assert t.person.member is not None
    owner = await review.start_return(
        t.session,
        t.person.member,
        t.person.identity.id,
        pledge_id,
        version,
        t.services.clock.now(),
    )
    await answer_query(update)
    await send(update, context, t.render("review/ask_comment", member=owner))


def _date_markup(t: Turn, ask: review.AskDate):
    return keyboard(
        [[(t.label(f"days_{days}"), f"rv:d:{days}:{ask.state_version}") for days in ask.choices]]
    )


async def _returned(update, context, t: Turn, day, state_version: int | None) -> None:
    assert t.person.member is not None
    clock = t.services.clock
    decided = await review.return_by(
        t.session,
        t.person.member,
        t.person.identity.id,
        day,
        state_version,
        clock.now(),
        clock.tz,
        composer(t.services),
    )
    await answer_query(update)
    await send(update, context, t.render("review/returned", decided=decided))


async def _send_document(
    update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, pledge_id: int | None
) -> None:
    """Build the .docx off the event loop and send it; nobody gets a pledge they may not read."""
    # Imported here, on first use: matplotlib, openpyxl and python-docx are ~70 MB of an idle bot.
    from bot.documents import pledge_docx
    clock = t.services.clock
    doc = await review.document(t.session, t.person.member, pledge_id, clock.today(), clock.tz)
    words = pledge_docx.parse_words(t.render("documents/pledge", doc=doc))
    await answer_query(update)
    data = await asyncio.to_thread(pledge_docx.build, doc, words, t.locale)
    name = search_key(doc.member_name).replace(" ", "-") or "dang-ky"
    chat = update.effective_chat
    assert chat is not None
    await end_transaction()
    await context.bot.send_document(
        chat.id,
        InputFile(data, filename=f"ban-dang-ky-{name}-{doc.year}.docx"),
        caption=t.render("review/document_caption", doc=doc),
    )


async def _start_search(update, context, t: Turn) -> None:
    await review.start_search(
        t.session, t.person.member, t.person.identity.id, t.services.clock.now()
    )
    await answer_query(update)
    await send(update, context, t.render("review/ask_name"))


def _paper_markup(t: Turn, view: pledges.WizardView):
    v = view.version
    if view.is_review:
        return keyboard(
            [
                [(t.label("submit_paper"), f"rv:pw:submit:{v}")],
                [(t.label("back"), f"rv:pw:back:{v}"), (t.label("cancel"), f"rv:pw:cancel:{v}")],
            ]
        )
    nav = [(t.label("skip"), f"rv:pw:skip:{v}")]
    if view.step > 0:
        nav.insert(0, (t.label("back"), f"rv:pw:back:{v}"))
    return keyboard([nav, [(t.label("cancel"), f"rv:pw:cancel:{v}")]])


def _paper_text(t: Turn, view: pledges.WizardView) -> str:
    return t.render("pledge/review" if view.is_review else "pledge/step", view=view)


async def _open_paper(update, context, t: Turn, member_id: int) -> None:
    clock = t.services.clock
    target, view = await review.open_paper(
        t.session, t.person.member, t.person.identity.id, member_id, clock.now(), clock.tz
    )
    await answer_query(update)
    await send(update, context, t.render("review/paper_intro", member=target.member))
    await send(update, context, _paper_text(t, view), _paper_markup(t, view))


async def _paper_button(update, context, t: Turn, action: str, version: int) -> None:
    clock = t.services.clock
    target = await review.paper_in_progress(
        t.session, t.person.member, t.person.identity.id, clock.today()
    )
    if action == "cancel":
        await pledges.move_as(t.session, target.writer, target.in_force, version, 0, clock.now())
        await pledges.cancel(t.session, t.person)
        await answer_query(update)
        await show(update, context, t.render("review/paper_cancelled", member=target.member))
        return
    if action == "submit":
        result = await pledges.submit_as(
            t.session, target.writer, target.in_force, version, clock.now(), clock.tz
        )
        await answer_query(update)
        await show(
            update,
            context,
            t.render("review/paper_submitted", member=target.member, result=result),
        )
        return
    delta = -1 if action == "back" else 1
    view = await pledges.move_as(
        t.session, target.writer, target.in_force, version, delta, clock.now()
    )
    await answer_query(update)
    await show(update, context, _paper_text(t, view), _paper_markup(t, view))


def _ints(parts: list[str], count: int) -> list[int] | None:
    if len(parts) != count or not all(p.isdigit() and len(p) < 12 for p in parts):
        return None
    return [int(p) for p in parts]


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every rv: button; its data is never trusted: each action re-checks who may do it."""
    query = update.callback_query
    assert query is not None and query.data is not None
    kind, *rest = query.data.removeprefix("rv:").split(":")
    async with turn(update, context) as t:
        if t.person.member is None:
            await answer_query(update)
            await send(update, context, t.render("common/join_first"))
            return
        try:
            if kind in ("nj", "aw", "njp", "awp") and (ids := _ints(rest, 2)):
                # From /pending: a new message; a page button turns the page in place.
                handler = _not_joined if kind.startswith("nj") else _awaiting
                await handler(update, context, t, ids[0], ids[1], kind.endswith("p"))
            elif kind == "o" and (ids := _ints(rest, 1)):
                await _open(update, context, t, ids[0])
            elif kind == "ok" and (ids := _ints(rest, 2)):
                await _approve(update, context, t, ids[0], ids[1])
            elif kind == "ret" and (ids := _ints(rest, 2)):
                await _start_return(update, context, t, ids[0], ids[1])
            elif kind == "d" and (ids := _ints(rest, 2)) and ids[0] in review.REVISE_DAYS:
                day = t.services.clock.today() + timedelta(days=ids[0])
                await _returned(update, context, t, day, ids[1])
            elif kind == "doc" and (ids := _ints(rest, 1)):
                await _send_document(update, context, t, ids[0])
            elif kind == "mine" and not rest:
                await _send_document(update, context, t, None)
            elif kind == "paper" and not rest:
                await _start_search(update, context, t)
            elif kind == "pm" and (ids := _ints(rest, 1)):
                await _open_paper(update, context, t, ids[0])
            elif (
                kind == "pw"
                and len(rest) == 2
                and rest[0] in ("back", "skip", "cancel", "submit")
                and (ids := _ints(rest[1:], 1))
            ):
                await _paper_button(update, context, t, rest[0], ids[0])
            else:
                await answer_query(update, t.render("common/stale_button"), alert=True)
        except Refusal as refusal:
            await _refuse(update, context, t, refusal)


async def enter_pledge(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/enterpledge: type in a member's paper form; first find the member by name."""
    async with turn(update, context) as t:
        try:
            await _start_search(update, context, t)
        except Refusal as refusal:
            await send(update, context, t.render(refusal.template, **refusal.context))


async def text_in_flow(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, flow: str):
    """Typed text while returning a pledge, searching a name, or typing in a paper form."""
    message = update.effective_message
    assert message is not None
    typed = message.text or ""
    clock = t.services.clock
    member = t.person.member
    try:
        if member is None:
            raise Refusal("common/join_first")
        if flow == review.FLOW_SEARCH:
            found = await review.search(t.session, member, typed, clock.today())
            rows = [
                [(f"{t.label('pick_member')} {f.member.full_name}", f"rv:pm:{f.member.id}")]
                for f in found
                if not f.filed
            ]
            await send(
                update,
                context,
                t.render("review/found", found=found),
                keyboard(rows) if rows else None,
            )
        elif flow == review.FLOW_RETURN:
            try:
                ask = await review.return_comment(
                    t.session, member, t.person.identity.id, typed, clock.now()
                )
            except Refusal as refusal:
                if refusal.template != "review/pick_date":
                    raise
                await _returned(update, context, t, parse_day(typed, clock.today()), None)
                return
            await send(update, context, t.render("review/ask_date", ask=ask), _date_markup(t, ask))
        else:
            target = await review.paper_in_progress(
                t.session, member, t.person.identity.id, clock.today()
            )
            view = await pledges.answer_as(
                t.session, target.writer, target.in_force, typed, clock.now()
            )
            text = stacked(t.render("pledge/saved"), _paper_text(t, view))
            await send(update, context, text, _paper_markup(t, view))
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))
