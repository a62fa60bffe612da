"""The permission matrix: every officer/leader command against six kinds of user.

The union: province → district PT → CĐCS A (the school) and its sibling B (the factory).
The six: a stranger (never joined), a member of A, an officer of A, a leader of A, a leader
of B and a leader of PT (A's parent). Each command is either allowed, answering with data
from the user's own subtree only, or refused with a clear message; nothing from outside the
scope leaks through /summary, its Excel export, /pending, /members or a broadcast audience.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from datetime import datetime

import pytest
from openpyxl import load_workbook

from bot.models import Role
from bot.services.roles import grant_role
from tests import factories
from tests.dialog import label, press, say

START_LOCAL = datetime(2024, 4, 5, 8, 0)
A_MEMBERS = ("Nguyễn Thị Hoa", "Trần Văn Bình", "Lê Thị Cúc")
B_MEMBERS = ("Phạm Văn Dũng", "Hoàng Thị Em")
KINDS = ("stranger", "member", "officer_a", "leader_a", "leader_b", "leader_parent")
STAFF = ("officer_a", "leader_a", "leader_b", "leader_parent")
LEADERS = ("leader_a", "leader_b", "leader_parent")

# command → who may use it (everyone else gets a refusal)
MATRIX = {
    "/pending": STAFF,
    "/summary": STAFF,
    "/broadcast": STAFF,
    "/invite": STAFF,
    "/members": STAFF,
    "/roles": LEADERS,
    "/enterpledge": STAFF,  # a district leader may start it but finds no one (test below)
}
REFUSALS = {"common/join_first", "start/no_invite", "common/hint"}


@dataclass
class World:
    svc: object
    emulator: object
    users: dict


@pytest.fixture
async def world(svc, bot, emulator, union) -> World:
    svc.clock.set(START_LOCAL)
    users = {"stranger": emulator.user(9000)}
    async with svc.db.session() as session:
        for index, name in enumerate(A_MEMBERS):
            member = await factories.make_member(session, svc, union.school, name)
            if index < 2:
                await factories.link(session, svc, member, 9100 + index)
        for index, name in enumerate(B_MEMBERS):
            member = await factories.make_member(session, svc, union.factory, name)
            await factories.link(session, svc, member, 9200 + index)
        staff = {
            "member": (union.school, None),
            "officer_a": (union.school, Role.officer),
            "leader_a": (union.school, Role.leader),
            "leader_b": (union.factory, Role.leader),
            "leader_parent": (union.district, Role.leader),
        }
        for number, (kind, (unit, role)) in enumerate(staff.items()):
            person = await factories.make_member(session, svc, unit, f"Đỗ Văn Người{number}")
            await factories.link(session, svc, person, 9300 + number)
            if role is not None:
                await grant_role(session, person, unit, role, svc.clock.now())
            await session.commit()
            users[kind] = emulator.user(9300 + number)
    return World(svc, emulator, users)


def _refused(templates: list[str]) -> bool:
    return any(name.endswith("not_allowed") or name in REFUSALS for name in templates)


@pytest.mark.parametrize("command", sorted(MATRIX))
@pytest.mark.parametrize("kind", KINDS)
async def test_matrix(world: World, command: str, kind: str) -> None:
    said = await say(world.svc, world.users[kind], command)
    allowed = kind in MATRIX[command]
    assert _refused(said.templates) is not allowed, (kind, command, said.templates, said.text)
    assert "Traceback" not in said.text and "error" not in said.templates


async def test_pending_lists_only_the_users_subtree(world: World) -> None:
    seen = {kind: (await say(world.svc, world.users[kind], "/pending")).text for kind in STAFF}
    for kind, text in seen.items():
        a_visible = kind in ("officer_a", "leader_a", "leader_parent")
        b_visible = kind in ("leader_b", "leader_parent")
        assert ("Lê Thị Cúc" in text) is a_visible, kind
        assert ("Hoàng Thị Em" in text) is b_visible, kind


async def test_summary_and_its_export_stay_in_scope(world: World) -> None:
    svc, leader_b = world.svc, world.users["leader_b"]
    said = await say(svc, leader_b, "/summary")
    assert "Công ty May" in said.text and "Trường THPT" not in said.text
    exported = await press(svc, leader_b, label(svc, "sm_export"))
    document = next(m for m in exported.messages if m.kind == "document")
    sheet = load_workbook(io.BytesIO(document.document)).active
    names = {cell.value for row in sheet.iter_rows() for cell in row if isinstance(cell.value, str)}
    assert set(B_MEMBERS) <= names
    assert not names & set(A_MEMBERS)

    parent = await say(svc, world.users["leader_parent"], "/summary")
    assert "Công ty May" in parent.text and "Trường THPT" in parent.text


async def test_members_search_does_not_reach_a_sibling(world: World) -> None:
    svc, leader_b = world.svc, world.users["leader_b"]
    await say(svc, leader_b, "/members")
    found = await say(svc, leader_b, "Cúc")
    assert "members/none_found" in found.templates
    own = await say(svc, world.users["officer_a"], "/members")
    assert own.templates
    mine = await say(svc, world.users["officer_a"], "Cúc")
    assert "members/none_found" not in mine.templates


async def test_paper_pledge_search_stays_in_the_grassroots_union(world: World) -> None:
    """A district leader reads aggregates only: a CĐCS member's pledge is not theirs to type."""
    svc = world.svc
    await say(svc, world.users["leader_parent"], "/enterpledge")
    found = await say(svc, world.users["leader_parent"], "Cúc")
    assert "Lê Thị Cúc" not in found.text
    await say(svc, world.users["officer_a"], "/enterpledge")
    found = await say(svc, world.users["officer_a"], "Cúc")
    assert "Lê Thị Cúc" in found.text


@pytest.mark.parametrize(
    ("kind", "reachable"),
    [("officer_a", 5 - 1), ("leader_b", 3 - 1), ("leader_parent", 5 + 3 + 1 - 1)],
)
async def test_broadcast_audience_stays_in_scope(world: World, kind: str, reachable: int):
    """The whole-subtree audience counts only people on the bot in the sender's subtree,
    the sender left out: A has 5 on the bot (2 members, the member persona, its officer and
    leader; its third member never joined), B has 3 (2 members and its leader), the
    district 1 of its own (its leader)."""
    svc, user = world.svc, world.users[kind]
    await say(svc, user, "/broadcast")
    await say(svc, user, "Họp công đoàn lúc 16:00 thứ Sáu")
    preview = await press(svc, user, label(svc, "bc_all"))
    counts = re.search(r"Sẽ gửi đến: (\d+)", preview.text)
    assert counts is not None, preview.text
    assert int(counts.group(1)) == reachable


async def test_forged_buttons_outside_scope_are_refused(world: World) -> None:
    """Buttons carry unit ids; a sibling's or a parent's id is refused, never served."""
    svc, leader_b = world.svc, world.users["leader_b"]
    await say(svc, leader_b, "/summary")
    async with svc.db.session() as session:
        from bot.services.units import get_unit

        school = await get_unit(session, "SCH")
        district = await get_unit(session, "PT")
    for data in (f"sm:x:{school.id}", f"sm:c:{school.id}", f"sm:u:{district.id}"):
        mark, before = len(svc.renderer.history), len(leader_b.bot_messages)
        await leader_b.press_data(data)
        await leader_b.wait_callback_answer()
        await asyncio.sleep(0.3)
        rendered = list(svc.renderer.history)[mark:]
        assert any("not_yours" in n or "stale" in n for n in rendered), (data, rendered)
        assert not any(m.kind in ("document", "photo") for m in leader_b.bot_messages[before:])
