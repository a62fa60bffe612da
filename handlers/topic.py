"""/topic: the year's topic, the term-wide topic, deadlines ahead, and lessons page by page."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.services import campaigns
from handlers.common import (
    Turn,
    answer_query,
    content_cache,
    keyboard,
    read_cache,
    send,
    show,
    turn,
)


async def campaign_in_force(t: Turn) -> campaigns.CampaignInForce | None:
    """The campaign in force for a member's unit today, from the caches where they hold it."""
    assert t.person.unit is not None
    return await campaigns.in_force_for_unit(
        t.session,
        t.person.unit,
        t.services.clock.today(),
        cache=content_cache(t.services),
        # Every turn, writing ones too: which campaigns reach a unit changes a few times a
        # year, and the cache hears of each change (bot.readcache).
        heads_cache=read_cache(t.services),
    )


async def campaign_or_explain(update: Update, context: ContextTypes.DEFAULT_TYPE, t: Turn):
    """The campaign in force for the member, or None after telling them why there is none."""
    if not t.person.joined:
        await answer_query(update)
        name = "common/membership_inactive" if t.person.inactive else "common/join_first"
        await send(update, context, t.render(name))
        return None
    in_force = await campaign_in_force(t)
    if in_force is None:
        await answer_query(update)
        await send(update, context, t.render("topic/none", unit=t.person.unit))
    return in_force


async def topic(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/topic: the overview, with a button to the first lesson."""
    async with turn(update, context, reads_only=True) as t:
        in_force = await campaign_or_explain(update, context, t)
        if in_force is None:
            return
        today = t.services.clock.today()
        rows = []
        if in_force.lesson_count:
            rows.append([(t.label("lesson_first"), "tp:0")])
        rows.append([(t.label("open_pledge"), "pl:open")])
        # The overview is the same for every member of the campaign that day, in a language.
        text = content_cache(t.services).derived(
            in_force.campaign.id,
            ("topic/overview", today, t.locale),
            lambda: t.render(
                "topic/overview",
                campaign=in_force.campaign,
                owner=in_force.unit,
                ahead=campaigns.upcoming(in_force, today),
                lesson_count=in_force.lesson_count,
            ),
        )
        await send(update, context, text, keyboard(rows))


async def lesson_page(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A lesson button ("tp:N"); a forged or out-of-range page is answered as stale."""
    query = update.callback_query
    assert query is not None and query.data is not None
    async with turn(update, context, reads_only=True) as t:
        in_force = await campaign_or_explain(update, context, t)
        if in_force is None:
            return
        raw = query.data.removeprefix("tp:")
        position = int(raw) if raw.isdigit() else -1
        lesson = await campaigns.lesson_at(
            t.session, in_force.campaign.id, position, cache=content_cache(t.services)
        )
        if lesson is None:
            await answer_query(update, t.render("common/stale_button"), alert=True)
            return
        await answer_query(update)
        nav = []
        if position > 0:
            nav.append((t.label("prev"), f"tp:{position - 1}"))
        if position + 1 < in_force.lesson_count:
            nav.append((t.label("next"), f"tp:{position + 1}"))
        rows = [nav] if nav else []
        if position + 1 == in_force.lesson_count:
            rows.append([(t.label("open_pledge"), "pl:open")])
        # A page is the same for every member reading it in that language.
        text = content_cache(t.services).derived(
            in_force.campaign.id,
            ("topic/lesson", position, t.locale),
            lambda: t.render(
                "topic/lesson", lesson=lesson, number=position + 1, total=in_force.lesson_count
            ),
        )
        await show(update, context, text, keyboard(rows))
