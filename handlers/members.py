"""/members: an officer finds a member of their subtree and transfers, deactivates or
reactivates them."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.models import Member, Unit
from bot.services import flows, lifecycle
from bot.services.authorization import Action, units_for
from bot.services.errors import Refusal
from handlers import menus
from handlers.common import Turn, answer_query, keyboard, send, show, staff_flow_button, turn

FLOW = "members"


async def members_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/members: ask for part of a member's name."""
    async with turn(update, context) as t:
        if not await units_for(t.session, t.person.member, Action.manage_roster):
            await send(update, context, t.render("members/not_allowed"))
            return
        await flows.begin(t.session, t.person, FLOW, "search", {}, t.services.clock.now())
        await send(update, context, t.render("members/ask_name"))


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, state) -> None:
    """Typed while in /members: part of a name to search the officer's subtree for."""
    typed = (update.effective_message.text if update.effective_message else "") or ""
    try:
        tops = await units_for(t.session, t.person.member, Action.manage_roster)
        if not tops:
            raise Refusal("members/not_allowed")
        found = await lifecycle.search(t.session, tops, typed)
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))
        return
    if not found:
        await send(update, context, t.render("members/none_found", query=typed[:60]))
        return
    state = await flows.advance(t.session, t.person, state, "pick", t.services.clock.now())
    v = state.version
    rows = []
    for member, unit in found:
        mark = "" if member.active else " ⏸"
        rows.append([(f"{member.full_name}{mark} · {unit.code}"[:60], f"mb:c:{member.id}:{v}")])
    rows.append([(t.label("cancel"), f"mb:no:{v}")])
    await send(update, context, t.render("members/pick", count=len(found)), keyboard(rows))


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every /members button; stale or forged ones are refused, ids are checked again."""
    await staff_flow_button(update, context, FLOW, _press)


async def _member(t: Turn, state) -> Member:
    member = await t.session.get(Member, state.data.get("member_id"))
    if member is None:
        raise Refusal("common/stale_button")
    return member


async def _in_scope(t: Turn, member: Member) -> None:
    unit = await t.session.get(Unit, member.unit_id)
    if unit is None or not await lifecycle.in_reach(
        t.session, t.person.member, unit, Action.manage_roster
    ):
        raise Refusal("members/out_of_scope")


async def _press(update, context, t: Turn, press: flows.Press, state) -> None:
    now = t.services.clock.now()
    step = state.data.get("step")
    if press.action == "no":
        await flows.finish(t.session, state)
        await answer_query(update)
        await show(update, context, t.render("common/flow_cancelled"))
        return
    if press.action == "c" and step == "pick":
        member = await t.session.get(Member, press.number)
        if member is None:
            raise Refusal("members/out_of_scope")
        await _in_scope(t, member)
        state = await flows.advance(t.session, t.person, state, "card", now, member_id=member.id)
        await _show_card(update, context, t, state, member)
        return
    if press.action in ("t", "d", "a") and step == "card":
        member = await _member(t, state)
        await _in_scope(t, member)
        if press.action == "t":
            await _pick_destination(update, context, t, state, member)
            return
        op = "deactivate" if press.action == "d" else "reactivate"
        state = await flows.advance(t.session, t.person, state, "confirm", now, op=op)
        await _confirm(update, context, t, state, f"members/confirm_{op}", member=member)
        return
    if press.action == "u" and step == "dest":
        member = await _member(t, state)
        unit = await t.session.get(Unit, press.number)
        if unit is None:
            raise Refusal("common/stale_button")
        if not await lifecycle.in_reach(t.session, t.person.member, unit, Action.manage_roster):
            home = await t.session.get(Unit, member.unit_id)
            assert home is not None
            raise Refusal(
                "members/transfer_outside",
                member=member,
                unit=unit,
                above=await lifecycle.common_ancestor(t.session, home, unit),
            )
        state = await flows.advance(
            t.session, t.person, state, "confirm", now, op="transfer", to_unit_id=unit.id
        )
        await _confirm(
            update, context, t, state, "members/confirm_transfer", member=member, unit=unit
        )
        return
    if press.action == "ok" and step == "confirm":
        await _apply(update, context, t, state)
        return
    raise Refusal("common/stale_button")


async def _show_card(update, context, t: Turn, state, member: Member) -> None:
    view = await lifecycle.card(t.session, member, t.services.clock.today())
    v = state.version
    if member.active:
        rows = [
            [(t.label("member_transfer"), f"mb:t:{v}"), (t.label("member_deactivate"), f"mb:d:{v}")]
        ]
    else:
        rows = [[(t.label("member_reactivate"), f"mb:a:{v}")]]
    rows.append([(t.label("cancel"), f"mb:no:{v}")])
    await answer_query(update)
    await show(update, context, t.render("members/card", card=view), keyboard(rows))


async def _pick_destination(update, context, t: Turn, state, member: Member) -> None:
    tops = await units_for(t.session, t.person.member, Action.manage_roster)
    units = [
        u
        for u in await lifecycle.subtree_units(t.session, tops, limit=21)
        if u.id != member.unit_id
    ][:20]
    state = await flows.advance(t.session, t.person, state, "dest", t.services.clock.now())
    v = state.version
    rows = [[(f"{u.code} – {u.name}"[:60], f"mb:u:{u.id}:{v}")] for u in units]
    rows.append([(t.label("cancel"), f"mb:no:{v}")])
    await answer_query(update)
    await show(update, context, t.render("members/pick_unit", member=member), keyboard(rows))


async def _confirm(update, context, t: Turn, state, template: str, **ctx) -> None:
    v = state.version
    rows = [[(t.label("confirm"), f"mb:ok:{v}"), (t.label("cancel"), f"mb:no:{v}")]]
    await answer_query(update)
    await show(update, context, t.render(template, **ctx), keyboard(rows))


async def _apply(update, context, t: Turn, state) -> None:
    member = await _member(t, state)
    actor = t.person.member
    now = t.services.clock.now()
    op = state.data.get("op")
    ended = []
    if op == "transfer":
        unit = await t.session.get(Unit, state.data.get("to_unit_id"))
        if unit is None:
            raise Refusal("common/stale_button")
        source = await lifecycle.transfer(t.session, member, unit, now, by=actor)
        text_ = t.render("members/transferred", member=member, source=source, unit=unit)
    elif op == "deactivate":
        ended = await lifecycle.deactivate(t.session, member, now, by=actor)
        text_ = t.render("members/deactivated", member=member, roles_ended=len(ended))
    elif op == "reactivate":
        await lifecycle.reactivate(t.session, member, now, by=actor)
        text_ = t.render("members/reactivated", member=member)
    else:
        raise Refusal("common/stale_button")
    member_id = member.id
    await flows.finish(t.session, state)
    await answer_query(update)
    await show(update, context, text_)
    if ended and member_id is not None:
        await menus.refresh(context.bot, t.services, t.session, member_id)
