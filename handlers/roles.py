"""/roles: a leader appoints officers and leaders below them, or ends a role."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.models import Member, Role, RoleGrant, Unit
from bot.services import flows, lifecycle
from bot.services import roles as role_rules
from bot.services.authorization import Action, units_for
from bot.services.errors import Refusal
from handlers import menus
from handlers.common import Turn, answer_query, keyboard, send, show, staff_flow_button, turn

FLOW = "roles"


def _unit_label(unit: Unit) -> str:
    return f"{unit.code} – {unit.name}"[:60]


async def roles_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/roles: the roles this leader may end, and a button to grant one."""
    async with turn(update, context) as t:
        actor = t.person.member
        if not await units_for(t.session, actor, Action.grant_role):
            await send(update, context, t.render("roles/not_allowed"))
            return
        assert actor is not None
        grants = await role_rules.revocable_by(t.session, actor)
        state = await flows.begin(t.session, t.person, FLOW, "overview", {}, t.services.clock.now())
        v = state.version
        rows = [[(t.label("role_grant"), f"rl:g:{v}")]]
        for grant, member, unit in grants:
            role = t.label(f"role_{grant.role.value}")
            rows.append(
                [(f"✖ {member.full_name} · {role} · {unit.code}"[:60], f"rl:x:{grant.id}:{v}")]
            )
        rows.append([(t.label("cancel"), f"rl:no:{v}")])
        text = t.render("roles/overview", grants=grants)
        await send(update, context, text, keyboard(rows))


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every /roles button; stale or forged ones are refused, ids are checked again."""
    await staff_flow_button(update, context, FLOW, _press)


async def _press(update, context, t: Turn, press: flows.Press, state) -> None:
    actor = t.person.member
    now = t.services.clock.now()
    if actor is None:
        raise Refusal("roles/not_allowed")
    if press.action == "no":
        await flows.finish(t.session, state)
        await answer_query(update)
        await show(update, context, t.render("common/flow_cancelled"))
        return
    if press.action == "g":
        tops = await units_for(t.session, actor, Action.grant_role)
        units = await lifecycle.subtree_units(t.session, tops)
        state = await flows.advance(t.session, t.person, state, "unit", now)
        v = state.version
        rows = [[(_unit_label(u), f"rl:u:{u.id}:{v}")] for u in units]
        rows.append([(t.label("cancel"), f"rl:no:{v}")])
        await answer_query(update)
        await show(update, context, t.render("roles/pick_unit"), keyboard(rows))
        return
    if press.action == "u":
        unit = await t.session.get(Unit, press.number)
        await _unit_chosen(update, context, t, state, unit)
        return
    if press.action == "m":
        unit = await t.session.get(Unit, state.data.get("unit_id"))
        member = await t.session.get(Member, press.number)
        if unit is None or member is None or state.data.get("step") != "member":
            raise Refusal("common/stale_button")
        await role_rules.check_target(t.session, member, unit)
        allowed = await role_rules.roles_grantable(t.session, actor, unit)
        state = await flows.advance(t.session, t.person, state, "role", now, member_id=member.id)
        v = state.version
        rows = [[(t.label(f"role_{role.value}"), f"rl:r:{role.value}:{v}") for role in allowed]]
        rows.append([(t.label("cancel"), f"rl:no:{v}")])
        await answer_query(update)
        await show(
            update, context, t.render("roles/pick_role", member=member, unit=unit), keyboard(rows)
        )
        return
    if press.action == "r":
        unit = await t.session.get(Unit, state.data.get("unit_id"))
        member = await t.session.get(Member, state.data.get("member_id"))
        if unit is None or member is None or press.arg not in ("officer", "leader"):
            raise Refusal("common/stale_button")
        role = Role(press.arg)
        if not await role_rules.may_grant(t.session, actor, unit, role):
            raise Refusal("roles/not_yours", unit=unit, role=role.value)
        state = await flows.advance(t.session, t.person, state, "confirm", now, role=role.value)
        await _confirm(update, context, t, state, "roles/confirm_grant", member, unit, role)
        return
    if press.action == "x":
        grant = await t.session.get(RoleGrant, press.number)
        if grant is None or grant.revoked_at is not None:
            raise Refusal("common/stale_button")
        unit = await t.session.get(Unit, grant.unit_id)
        member = await t.session.get(Member, grant.member_id)
        assert unit is not None and member is not None
        if not await role_rules.may_grant(t.session, actor, unit, grant.role):
            raise Refusal("roles/not_yours", unit=unit, role=grant.role.value)
        state = await flows.advance(t.session, t.person, state, "confirm", now, grant_id=grant.id)
        await _confirm(update, context, t, state, "roles/confirm_revoke", member, unit, grant.role)
        return
    if press.action == "ok" and state.data.get("step") == "confirm":
        await _apply(update, context, t, state, actor)
        return
    raise Refusal("common/stale_button")


async def _confirm(update, context, t: Turn, state, template, member, unit, role: Role) -> None:
    v = state.version
    rows = [[(t.label("confirm"), f"rl:ok:{v}"), (t.label("cancel"), f"rl:no:{v}")]]
    await answer_query(update)
    await show(
        update,
        context,
        t.render(template, member=member, unit=unit, role=role.value),
        keyboard(rows),
    )


async def _unit_chosen(update, context, t: Turn, state, unit: Unit | None) -> None:
    actor = t.person.member
    if unit is None or state.data.get("step") not in ("unit", "search", "member"):
        raise Refusal("common/stale_button")
    if not await role_rules.roles_grantable(t.session, actor, unit):
        raise Refusal("roles/unit_outside", unit=unit)
    state = await flows.advance(
        t.session, t.person, state, "search", t.services.clock.now(), unit_id=unit.id
    )
    await answer_query(update)
    await show(update, context, t.render("roles/ask_name", unit=unit))


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn, state) -> None:
    """Typed while in /roles: a unit code (picking a unit) or part of a name (searching)."""
    typed = (update.effective_message.text if update.effective_message else "") or ""
    step = state.data.get("step")
    try:
        if step == "unit":
            from bot.services.units import get_unit

            unit = await get_unit(t.session, typed[:64])
            if unit is None:
                raise Refusal("roles/unit_unknown", code=typed[:64])
            await _unit_chosen(update, context, t, state, unit)
            return
        if step not in ("search", "member"):
            await send(update, context, t.render("roles/use_buttons"))
            return
        unit = await t.session.get(Unit, state.data.get("unit_id"))
        assert unit is not None
        found = [(m, u) for m, u in await lifecycle.search(t.session, [unit], typed) if m.active]
        if not found:
            await send(update, context, t.render("members/none_found", query=typed[:60]))
            return
        state = await flows.advance(t.session, t.person, state, "member", t.services.clock.now())
        v = state.version
        rows = [[(f"{m.full_name} · {u.code}"[:60], f"rl:m:{m.id}:{v}")] for m, u in found]
        rows.append([(t.label("cancel"), f"rl:no:{v}")])
        await send(update, context, t.render("roles/pick_member", unit=unit), keyboard(rows))
    except Refusal as refusal:
        await send(update, context, t.render(refusal.template, **refusal.context))


async def _apply(update, context, t: Turn, state, actor: Member) -> None:
    now = t.services.clock.now()
    if state.data.get("grant_id"):
        ended, member, unit = await role_rules.revoke_grant(
            t.session, state.data["grant_id"], now, actor
        )
        role = ended.role
        template = "roles/revoked"
    else:
        unit = await t.session.get(Unit, state.data.get("unit_id"))
        member = await t.session.get(Member, state.data.get("member_id"))
        if unit is None or member is None:
            raise Refusal("common/stale_button")
        role = Role(state.data["role"])
        await role_rules.grant(t.session, member, unit, role, now, by=actor)
        template = "roles/granted"
    await flows.finish(t.session, state)
    member_id = member.id
    ctx = {"member": member, "unit": unit, "role": role.value}
    text = t.render(template, **ctx)
    await answer_query(update)
    await show(update, context, text)
    assert member_id is not None
    await menus.refresh(context.bot, t.services, t.session, member_id)
