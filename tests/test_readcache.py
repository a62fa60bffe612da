"""The read cache of /topic and lessons never shows a member what is no longer true.

A member's person and their unit's campaign are kept in memory for read-only turns
(bot/readcache.py). These tests change what the cache holds in every way the bot knows of:
a write in the same process, another process (the `chuyende` command line, a real
subprocess), a lost listener on PostgreSQL, and a read racing a write. The bot talks to the
Bot API emulator; nothing else is faked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import date

import asyncpg
import pytest
from pydantic import ValidationError
from sqlalchemy import event

from bot.db import asyncpg_connect_args
from bot.models import Member
from bot.readcache import NOTIFY_CHANNEL, Change, ReadCache
from bot.services import lifecycle
from bot.services.campaigns import apply_campaign
from bot.settings import Settings
from handlers.common import read_cache
from tests import factories
from tests.conftest import bot_settings
from tests.dialog import label, press, say
from tests.services import admin_cli as cli

USER = 702
PHONE = "+84912333444"
SQLITE_TTL = 0.5


def on_postgres(svc) -> bool:
    return not svc.db.sqlite


@pytest.fixture
def settings(emulator, database_url: str) -> Settings:
    # On PostgreSQL a change must arrive by NOTIFY, so the age bound is made too long to help.
    ttl = SQLITE_TTL if database_url.startswith("sqlite") else 3600
    return bot_settings(emulator, database_url, CHUYENDE_READ_CACHE_SECONDS=ttl)


@pytest.fixture
async def lan_member(svc, union) -> Member:
    async with svc.db.session() as session:
        member = await factories.make_member(session, svc, union.school, "Nguyễn Thị Lan", PHONE)
        await factories.link(session, svc, member, USER)
    return member


@pytest.fixture
def lan(emulator, lan_member):
    return emulator.user(USER, first_name="Lan", started=True)


class Statements:
    """Statements the bot sends to the database while counting, but for the done marks of
    read-only updates, which go in together every 0.2 s (bot.services.updates.DoneMarks)."""

    def __init__(self, db) -> None:
        self.seen: list[str] = []
        for engine in {db.engine, db.read_engine}:
            event.listen(engine.sync_engine, "before_cursor_execute", self._one)

    def _one(self, _conn, _cursor, statement: str, *_args) -> None:
        if "processedupdate" not in statement and statement.strip() != "BEGIN IMMEDIATE":
            self.seen.append(statement)


async def wait_listening(svc) -> None:
    for _ in range(100):
        if read_cache(svc).serving:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cache never started serving")


async def test_a_lesson_press_after_the_first_asks_the_database_nothing(svc, bot, lan):
    await wait_listening(svc)
    await say(svc, lan, "/topic")
    counted = Statements(svc.db)
    said = await press(svc, lan, label(svc, "lesson_first"))
    assert said.templates == ["topic/lesson"]
    assert (await press(svc, lan, label(svc, "next"))).templates == ["topic/lesson"]
    assert counted.seen == []


async def test_a_lesson_edited_and_applied_again_reaches_the_next_press(svc, bot, lan, union):
    """A page is rendered once per language and kept with the campaign's content; applying
    the campaign again with an edited lesson replaces both, in this process at once."""
    await wait_listening(svc)
    await say(svc, lan, "/topic")
    first = await press(svc, lan, label(svc, "lesson_first"))
    spec = svc.catalog.campaigns["binh-thuan-2024"]
    lesson = spec.lessons[0]
    edited_body = lesson.body.model_copy(update={"vi": "Bài đã được Ban Thường vụ sửa lại."})
    edited = spec.model_copy(
        update={"lessons": (lesson.model_copy(update={"body": edited_body}), *spec.lessons[1:])}
    )
    catalog = dataclasses.replace(
        svc.catalog, campaigns={**svc.catalog.campaigns, spec.id: edited}
    )
    assert "Ban Thường vụ sửa lại" not in first.messages[0].text
    async with svc.db.session() as session:
        await apply_campaign(session, catalog, spec.id, union.province, svc.clock.now())
        await session.commit()
    await say(svc, lan, "/topic")
    again = await press(svc, lan, label(svc, "lesson_first"))
    assert again.templates == ["topic/lesson"]
    assert "Ban Thường vụ sửa lại" in again.messages[0].text


async def test_a_member_deactivated_in_this_process_is_told_at_once(svc, bot, lan, lan_member):
    await wait_listening(svc)
    assert (await say(svc, lan, "/topic")).templates == ["topic/overview"]
    async with svc.db.session() as session:
        member = await session.get(Member, lan_member.id)
        await lifecycle.deactivate(session, member, svc.clock.now())
    assert (await say(svc, lan, "/topic")).templates == ["common/membership_inactive"]


async def test_a_wizard_step_asks_nothing_of_the_campaigns_and_still_sees_a_new_one(
    svc, bot, lan, union
):
    """Writing turns read which campaigns reach the unit from memory too; a campaign applied
    meanwhile (here a school override moving the deadline to 12/4) reaches the next /pledge."""
    await wait_listening(svc)
    said = await say(svc, lan, "/pledge")
    assert "10/4/2024" in said.messages[0].text
    counted = Statements(svc.db)
    said = await say(svc, lan, "Học và làm theo Bác mỗi ngày.")
    assert said.templates == ["pledge/saved", "pledge/step"]
    assert not [s for s in counted.seen if "FROM campaign" in s]
    await press(svc, lan, label(svc, "cancel"))
    async with svc.db.session() as session:
        await factories.override_pledge_deadline(session, svc, union.school, date(2024, 4, 12))
    said = await say(svc, lan, "/pledge")
    assert "12/4/2024" in said.messages[0].text


async def test_a_member_deactivated_from_the_command_line_is_told(svc, bot, lan):
    """Another process: on PostgreSQL its NOTIFY arrives; on SQLite the age bound passes."""
    await wait_listening(svc)
    assert (await say(svc, lan, "/topic")).templates == ["topic/overview"]
    await asyncio.to_thread(cli, svc, "member", "deactivate", "--phone", PHONE)
    if on_postgres(svc):
        # The notification crosses a socket: wait for it to empty the cache (a slow machine
        # may take more than a moment), however long, within reason.
        cache = read_cache(svc)
        for _ in range(250):
            if cache.person(("telegram", str(USER))) is None:
                break
            await asyncio.sleep(0.02)
    else:
        await asyncio.sleep(SQLITE_TTL + 0.1)
    assert (await say(svc, lan, "/topic")).templates == ["common/membership_inactive"]


async def test_a_change_made_while_the_listener_was_cut_is_not_hidden(
    svc, bot, lan, lan_member
):
    """Notifications sent while a process is deaf are lost: it comes back with an empty cache."""
    if not on_postgres(svc):
        pytest.skip("SQLite has one bot process: there is no listener to lose")
    await wait_listening(svc)
    await say(svc, lan, "/topic")
    bus = svc.extras["cache_bus"]
    connected = bus.connections
    conn = await asyncpg.connect(**asyncpg_connect_args(svc.db.url))
    try:  # cut the listener's connection, as a network failure or an operator would
        assert bus.backend_pid is not None
        await conn.execute("SELECT pg_terminate_backend($1)", bus.backend_pid)
        # A change whose NOTIFY nobody hears (a raw statement sends none at all).
        await conn.execute("UPDATE member SET active = false WHERE id = $1", lan_member.id)
    finally:
        await conn.close()
    for _ in range(200):  # the listener comes back by itself
        if bus.connections > connected and read_cache(svc).serving:
            break
        await asyncio.sleep(0.05)
    assert bus.connections > connected
    assert (await say(svc, lan, "/topic")).templates == ["common/membership_inactive"]


def test_a_cache_that_cannot_hear_other_processes_serves_nothing():
    cache = ReadCache(ttl=60, needs_listener=True)
    cache.listening = True
    cache.put_person(("telegram", "1"), 1, "kept", cache.generation())
    assert cache.person(("telegram", "1")) == "kept"
    cache.listening = False  # the listener's connection dropped
    assert cache.person(("telegram", "1")) is None
    cache.put_person(("telegram", "2"), 2, "new", cache.generation())
    cache.listening = True
    assert cache.person(("telegram", "2")) is None


async def test_an_unreadable_notification_clears_the_cache(svc, bot, lan):
    if not on_postgres(svc):
        pytest.skip("notifications are PostgreSQL's")
    await wait_listening(svc)
    await say(svc, lan, "/topic")
    cache = read_cache(svc)
    assert cache.person(("telegram", str(USER))) is not None
    conn = await asyncpg.connect(**asyncpg_connect_args(svc.db.url))
    try:
        await conn.execute("SELECT pg_notify($1, 'not json {')", NOTIFY_CHANNEL)
    finally:
        await conn.close()
    for _ in range(100):
        if cache.person(("telegram", str(USER))) is None:
            break
        await asyncio.sleep(0.02)
    assert cache.person(("telegram", str(USER))) is None
    # The overview itself is kept with the campaign's content for the day; the person is
    # read afresh and the member still gets it.
    assert "Chuyên đề toàn khóa" in (await say(svc, lan, "/topic")).text


def test_a_read_begun_before_a_change_is_not_kept():
    cache = ReadCache(ttl=60)
    key = ("telegram", "1")
    generation = cache.generation()
    cache.apply(Change(members={42}))  # a commit lands while the read is in flight
    cache.put_person(key, 42, object(), generation)
    assert cache.person(key) is None
    cache.put_person(key, 42, "fresh", cache.generation())
    assert cache.person(key) == "fresh"


def test_the_cache_keeps_a_bounded_number_of_persons():
    cache = ReadCache(ttl=60, max_people=3)
    for n in range(10):
        cache.put_person(("telegram", str(n)), n, f"p{n}", cache.generation())
    assert [cache.person(("telegram", str(n))) for n in range(10)][-3:] == ["p7", "p8", "p9"]
    assert cache.person(("telegram", "0")) is None
    cache.apply(Change(members={8}))  # the member index follows evictions and changes
    assert cache.person(("telegram", "8")) is None


def test_persons_and_units_not_seen_within_the_age_bound_leave_memory():
    cache = ReadCache(ttl=0.05)
    for n in range(100):
        cache.put_person(("telegram", str(n)), n, f"p{n}", cache.generation())
    time.sleep(0.06)
    cache.put_person(("telegram", "new"), 1000, "new", cache.generation())
    assert len(cache._people) == 1 and len(cache._people_by_member) == 1
    for n in range(100):
        cache.put_campaign(((n,), 2024), [n], cache.generation())
    time.sleep(0.06)
    cache.put_campaign(((1000,), 2024), [1000], cache.generation())
    assert len(cache._campaigns) == 1 and cache.campaign(((1000,), 2024)) == [1000]


def test_a_change_too_big_to_announce_becomes_forget_everyone():
    change = Change(members=set(range(5000)))
    assert Change.from_payload(change.payload()).all_people


@pytest.mark.parametrize("value", ["-1", "7200", "soon"])
def test_a_bad_cache_age_is_refused_at_start(value):
    with pytest.raises(ValidationError, match=r"read_cache_seconds|CHUYENDE_READ_CACHE_SECONDS"):
        Settings(CHUYENDE_READ_CACHE_SECONDS=value, _env_file=None)
