"""Roles at units: the admin's CLI, a leader appointing in chat, /invite with a QR code,
and command menus that follow the roles a person holds."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import segno
from sqlmodel import select
from typer.testing import CliRunner

from bot.cli import app
from bot.db import Database
from bot.models import Invite, Member, Role, RoleGrant
from bot.services.invites import QR_SCALE
from bot.services.roles import grant_role
from tests import factories
from tests.dialog import act, label, press, say

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- the admin's command line ----------------------------------------------------------------


@pytest.fixture
def admin(tmp_path, monkeypatch):
    """`chuyende …` on a migrated SQLite file holding the test union and three members."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CHUYENDE_LOCALE", "en")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)

    def run(*args: str):
        return runner.invoke(app, list(args))

    assert run("db", "upgrade").exit_code == 0

    async def seed():
        from bot.runtime import make_services
        from bot.settings import Settings

        svc = make_services(Settings(DATABASE_URL=url, _env_file=None))
        async with svc.db.session() as session:
            union = await factories.make_union(session, svc)
            await factories.make_member(
                session, svc, union.school, "Nguyễn Thị Lan", "+84912000001"
            )
            await factories.make_member(session, svc, union.school, "Trần Văn Bình", "+84912000002")
            await factories.make_member(session, svc, union.factory, "Lê Thị Chi", "+84912000003")
        await svc.db.dispose()

    asyncio.run(seed())

    async def grants():
        database = Database(url)
        async with database.session() as session:
            rows = (await session.exec(select(RoleGrant).order_by(RoleGrant.id))).all()
        await database.dispose()
        return rows

    run.grants = lambda: asyncio.run(grants())
    return run


def test_cli_grants_revokes_and_ends_the_committee(admin):
    made = admin("grant", "--unit", "SCH", "--phone", "0912000001", "--role", "officer")
    assert made.exit_code == 0, made.output
    assert "Granted: Nguyễn Thị Lan is officer at SCH" in made.output
    again = admin("grant", "--unit", "SCH", "--phone", "+84912000001", "--role", "officer")
    assert "Already held" in again.output
    assert (
        admin("grant", "--unit", "SCH", "--phone", "0912000002", "--role", "leader").exit_code == 0
    )
    assert (
        admin("grant", "--unit", "PT", "--phone", "0912000003", "--role", "leader").exit_code == 0
    )
    assert len(admin.grants()) == 3  # granting twice made no second row

    ended = admin("revoke", "--unit", "SCH", "--phone", "0912000001", "--role", "officer")
    assert ended.exit_code == 0 and "Ended Nguyễn Thị Lan's officer role at SCH" in ended.output

    committee = admin("roles", "end", "--unit", "SCH")
    assert committee.exit_code == 0
    assert "Ended 1 role(s) at SCH" in committee.output and "Trần Văn Bình" in committee.output
    rows = admin.grants()
    assert len(rows) == 3  # history kept: nothing deleted
    assert [r.revoked_at is not None for r in rows] == [True, True, False]  # PT's stays
    assert all(r.granted_by_member_id is None and r.revoked_by_member_id is None for r in rows)
    nobody = admin("roles", "end", "--unit", "SCH")
    assert "Nobody holds a role at SCH" in nobody.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("grant", "--unit", "NOPE", "--phone", "0912000001", "--role", "officer"), '"NOPE"'),
        (("grant", "--unit", "SCH", "--phone", "0999999999", "--role", "officer"), "No member"),
        (("grant", "--unit", "SCH", "--phone", "not-a-phone", "--role", "officer"), "No member"),
        (("grant", "--unit", "SCH", "--role", "officer"), "exactly one of --phone"),
        (("grant", "--unit", "SCH", "--phone", "0912000001", "--role", "member"), "officer and"),
        # Chi belongs to the factory: a role at the school is outside her unit's subtree.
        (("grant", "--unit", "SCH", "--phone", "0912000003", "--role", "officer"), "outside"),
        (("revoke", "--unit", "SCH", "--phone", "0912000002", "--role", "leader"), "does not hold"),
        (("roles", "end", "--unit", "NOPE"), '"NOPE"'),
    ],
)
def test_cli_bad_role_input_is_explained_and_changes_nothing(admin, args, message):
    result = admin(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert admin.grants() == []


@pytest.fixture
def telegram_on_a_thread():
    """The Bot API emulator on its own event loop, for the (synchronous) admin commands."""
    import threading

    from bot.channels.emulator import BotApiEmulator
    from tests.conftest import TOKEN

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    emu = BotApiEmulator(token=TOKEN, bot_username="chuyende_test_bot")
    asyncio.run_coroutine_threadsafe(emu.start(), loop).result(15)
    yield emu
    asyncio.run_coroutine_threadsafe(emu.stop(), loop).result(15)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_cli_grant_and_revoke_update_the_chat_menu(admin, monkeypatch, telegram_on_a_thread):
    from tests.conftest import TOKEN

    async def link_lan():
        from bot.runtime import make_services
        from bot.settings import Settings

        svc = make_services(Settings(_env_file=None))
        async with svc.db.session() as session:
            lan = (await session.exec(select(Member).where(Member.phone == "+84912000001"))).one()
            await factories.link(session, svc, lan, 4242)
        await svc.db.dispose()

    asyncio.run(link_lan())
    offline = admin("grant", "--unit", "SCH", "--phone", "0912000001", "--role", "officer")
    assert "next /start" in offline.output  # no token: the menu follows at the next /start
    admin("revoke", "--unit", "SCH", "--phone", "0912000001", "--role", "officer")

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", telegram_on_a_thread.base_url)
    chat = {"type": "chat", "chat_id": 4242}
    made = admin("grant", "--unit", "SCH", "--phone", "0912000001", "--role", "officer")
    assert made.exit_code == 0 and "menu was updated" in made.output
    menu = [c["command"] for c in telegram_on_a_thread.commands(chat)]
    assert "pending" in menu and "invite" in menu and "roles" not in menu
    assert admin("roles", "end", "--unit", "SCH").exit_code == 0
    assert telegram_on_a_thread.commands(chat) == []


# -- a leader in chat ------------------------------------------------------------------------


@pytest.fixture
async def people(svc, bot, emulator, union):
    """Hà leads the district; Lan, Bình (school) and Chi (factory) are members; Tâm is a
    member of the province's own staff, above the district."""
    users = {}
    async with svc.db.session() as session:
        rows = [
            ("ha", "Võ Thị Hà", union.district),
            ("lan", "Nguyễn Thị Lan", union.school),
            ("binh", "Trần Văn Bình", union.school),
            ("chi", "Lê Thị Chi", union.factory),
            ("tam", "Đỗ Minh Tâm", union.province),
        ]
        for index, (key, name, unit) in enumerate(rows):
            member = await factories.make_member(session, svc, unit, name, f"+8491300{index:04d}")
            await factories.link(session, svc, member, 700 + index)
            user = emulator.user(700 + index, first_name=key)
            user.member = member
            users[key] = user
        await grant_role(session, users["ha"].member, union.district, Role.leader, svc.clock.now())
        await session.commit()
    return users


def _version(message, text: str) -> int:
    return int(message.callback_data(text).rsplit(":", 1)[1])


async def _grant_flow(svc, leader, unit_code: str, name: str):
    said = await say(svc, leader, "/roles")
    assert said.templates == ["roles/overview"]
    said = await press(svc, leader, label(svc, "role_grant"))
    assert said.templates == ["roles/pick_unit"]
    [unit_button] = [b for row in said.last.buttons for b in row if b.startswith(unit_code + " ")]
    said = await press(svc, leader, unit_button)
    assert said.templates == ["roles/ask_name"]
    said = await say(svc, leader, name)
    assert said.templates == ["roles/pick_member"]
    return said


async def test_leader_appoints_an_officer_below_who_can_then_use_pending(svc, emulator, people):
    leader, lan = people["ha"], people["lan"]
    before = await say(svc, lan, "/pending")
    assert before.templates == ["pending/not_allowed"]
    said = await _grant_flow(svc, leader, "SCH", "lan")  # no diacritics needed
    [[member_button], _cancel] = said.last.buttons
    assert member_button.startswith("Nguyễn Thị Lan")
    said = await press(svc, leader, member_button)
    assert said.templates == ["roles/pick_role"]
    assert said.last.buttons[0] == [label(svc, "role_officer"), label(svc, "role_leader")]
    await press(svc, leader, label(svc, "role_officer"))
    said = await press(svc, leader, label(svc, "confirm"))
    assert said.templates == ["roles/granted"] and "Nguyễn Thị Lan" in said.text

    async with svc.db.reader() as session:
        [grant] = (
            await session.exec(select(RoleGrant).where(RoleGrant.role == Role.officer))
        ).all()
    assert grant.granted_by_member_id == leader.member.id and grant.revoked_at is None
    menu = [c["command"] for c in emulator.effective_commands(lan.id)]
    assert "pending" in menu and "members" in menu and "roles" not in menu

    after = await say(svc, lan, "/pending")
    assert after.templates == ["pending/list"]
    assert "Trần Văn Bình" in after.text and "Lê Thị Chi" not in after.text  # her subtree only


async def test_leader_may_not_make_a_peer_or_reach_above(svc, emulator, union, people):
    leader = people["ha"]
    await say(svc, leader, "/roles")
    said = await press(svc, leader, label(svc, "role_grant"))
    assert not [b for row in said.last.buttons for b in row if b.startswith("BT ")]
    v = _version(said.last, label(svc, "cancel"))
    refused = await act(svc, leader, lambda: leader.press_data(f"rl:u:{union.province.id}:{v}"))
    assert refused.templates == ["roles/unit_outside"]

    # At their own unit only the officer role is offered; a forged leader button is refused.
    await press(
        svc, leader, next(b for row in said.last.buttons for b in row if b.startswith("PT "))
    )
    said = await say(svc, leader, "Hà")  # the leader herself, at the district
    said = await press(svc, leader, said.last.buttons[0][0])
    assert said.last.buttons[0] == [label(svc, "role_officer")]
    v = _version(said.last, label(svc, "role_officer"))
    refused = await act(svc, leader, lambda: leader.press_data(f"rl:r:leader:{v}"))
    assert refused.templates == ["roles/not_yours"]
    async with svc.db.reader() as session:
        grants = (await session.exec(select(RoleGrant))).all()
    assert [(g.role, g.unit_id) for g in grants] == [(Role.leader, union.district.id)]


async def test_forged_member_button_outside_the_unit_is_refused(svc, people):
    leader = people["ha"]
    said = await _grant_flow(svc, leader, "SCH", "lan")
    v = _version(said.last, label(svc, "cancel"))
    chi, tam = people["chi"].member, people["tam"].member  # factory; province staff
    for outsider in (chi, tam):
        refused = await act(svc, leader, lambda m=outsider: leader.press_data(f"rl:m:{m.id}:{v}"))
        assert refused.templates == ["roles/member_outside"]
    stale = await leader.press_data(f"rl:m:{chi.id}:{v - 1}")
    assert stale
    answer = await leader.wait_callback_answer()
    assert answer.get("show_alert")
    async with svc.db.reader() as session:
        assert len((await session.exec(select(RoleGrant))).all()) == 1  # only Hà's own


async def test_a_member_cannot_use_roles_members_or_invite(svc, emulator, people):
    lan = people["lan"]
    for command, template in (
        ("/roles", "roles/not_allowed"),
        ("/members", "members/not_allowed"),
        ("/invite", "invite/not_allowed"),
    ):
        said = await say(svc, lan, command)
        assert said.templates == [template]
    await say(svc, lan, "/start")
    assert emulator.commands({"type": "chat", "chat_id": lan.id}) == []
    menu = [c["command"] for c in emulator.effective_commands(lan.id)]
    assert "pledge" in menu and "pending" not in menu and "invite" not in menu


async def test_leader_revokes_a_role_from_the_list_and_the_menu_shrinks(
    svc, emulator, union, people
):
    leader, lan = people["ha"], people["lan"]
    async with svc.db.session() as session:
        await grant_role(session, lan.member, union.school, Role.officer, svc.clock.now())
        await session.commit()
    said = await say(svc, lan, "/start")
    assert "pending" in [c["command"] for c in emulator.effective_commands(lan.id)]
    help_text = (await say(svc, lan, "/help")).text
    assert "/pending" in help_text and "/members" in help_text and "/roles" not in help_text

    said = await say(svc, leader, "/roles")
    assert "Nguyễn Thị Lan" in said.text
    [revoke_button] = [b for row in said.last.buttons for b in row if "Nguyễn Thị Lan" in b]
    assert not [b for row in said.last.buttons for b in row if "Võ Thị Hà" in b]  # her own
    said = await press(svc, leader, revoke_button)
    assert said.templates == ["roles/confirm_revoke"]
    said = await press(svc, leader, label(svc, "confirm"))
    assert said.templates == ["roles/revoked"]
    async with svc.db.reader() as session:
        grant = (
            await session.exec(select(RoleGrant).where(RoleGrant.member_id == lan.member.id))
        ).one()
    assert grant.revoked_at is not None and grant.revoked_by_member_id == leader.member.id
    assert "pending" not in [c["command"] for c in emulator.effective_commands(lan.id)]
    assert (await say(svc, lan, "/pending")).templates == ["pending/not_allowed"]
    help_text = (await say(svc, lan, "/help")).text
    assert "/pending" not in help_text


async def test_the_leaders_menu_and_help_list_every_staff_command(svc, emulator, people):
    leader = people["ha"]
    said = await say(svc, leader, "/help")
    menu = [c["command"] for c in emulator.effective_commands(leader.id)]
    for command in ("pending", "summary", "broadcast", "invite", "members", "roles"):
        assert command in menu
        assert f"/{command}" in said.text
    assert menu[:2] == ["start", "topic"] and menu[-2:] == ["language", "cancel"]


# -- /invite -----------------------------------------------------------------------------------


async def test_officer_gets_an_invite_link_and_its_qr_code(svc, emulator, union, people):
    lan = people["lan"]
    async with svc.db.session() as session:
        await grant_role(session, lan.member, union.school, Role.officer, svc.clock.now())
        await session.commit()
    said = await say(svc, lan, "/invite")
    assert said.templates == ["invite/pick_unit"]
    buttons = [b for row in said.last.buttons for b in row]
    assert buttons[0].startswith("SCH ") and not [b for b in buttons if b.startswith("FAC ")]
    said = await press(svc, lan, buttons[0])
    # An officer may invite members but not appoint officers (that is a leader's right).
    assert said.last.buttons[0] == [label(svc, "invite_member")]
    said = await press(svc, lan, label(svc, "invite_member"))
    assert said.templates == ["invite/created", "invite/qr_caption"]
    async with svc.db.reader() as session:
        [invite] = (await session.exec(select(Invite))).all()
    link = f"https://t.me/chuyende_test_bot?start={invite.code}"
    assert link in said.messages[0].text and "5/5/2024" in said.messages[0].text  # 30 days
    photo = said.messages[-1]
    assert photo.kind == "photo" and link in photo.text
    assert photo.photo.startswith(PNG_SIGNATURE)
    import io

    rebuilt = io.BytesIO()
    segno.make(link, error="m").save(rebuilt, kind="png", scale=QR_SCALE, border=4)
    assert photo.photo == rebuilt.getvalue()

    # A newcomer opens the link and joins the school.
    newcomer = emulator.user(799, first_name="Mai")
    said = await act(svc, newcomer, lambda: newcomer.start(invite.code))
    assert said.templates == ["start/consent"]


async def test_leader_makes_an_officer_invite_that_expires(svc, emulator, union, people):
    leader = people["ha"]
    said = await say(svc, leader, "/invite")
    [school] = [b for row in said.last.buttons for b in row if b.startswith("SCH ")]
    said = await press(svc, leader, school)
    assert said.last.buttons[0] == [label(svc, "invite_member"), label(svc, "invite_officer")]
    said = await press(svc, leader, label(svc, "invite_officer"))
    assert said.templates == ["invite/created", "invite/qr_caption"]
    async with svc.db.session() as session:
        [invite] = (await session.exec(select(Invite))).all()
        assert invite.role == Role.officer and invite.unit_id == union.school.id
    svc.clock.advance(timedelta(days=31))
    late = emulator.user(798, first_name="Late")
    said = await act(svc, late, lambda: late.start(invite.code))
    assert said.templates == ["start/invite_expired"]


async def test_forged_invite_buttons_are_refused(svc, union, people):
    lan = people["lan"]
    async with svc.db.session() as session:
        await grant_role(session, lan.member, union.school, Role.officer, svc.clock.now())
        await session.commit()
    said = await say(svc, lan, "/invite")
    v = _version(said.last, label(svc, "cancel"))
    refused = await act(svc, lan, lambda: lan.press_data(f"iv:u:{union.factory.id}:{v}"))
    assert refused.templates == ["invite/out_of_scope"]
    said = await press(svc, lan, next(b for row in said.last.buttons for b in row))
    v = _version(said.last, label(svc, "invite_member"))
    refused = await act(svc, lan, lambda: lan.press_data(f"iv:k:officer:{v}"))
    assert refused.templates == ["roles/not_yours"]
    async with svc.db.reader() as session:
        assert (await session.exec(select(Invite))).all() == []


async def test_the_leaders_menu_follows_their_language(svc, emulator, people):
    leader = people["ha"]
    await say(svc, leader, "/language")
    await press(svc, leader, label(svc, "lang_en"))
    described = {c["command"]: c["description"] for c in emulator.effective_commands(leader.id)}
    assert described["roles"] == "Appoint or remove officers and leaders (leaders)"


async def test_demo_officer_and_leader_hold_every_staff_command(svc, bot, emulator):
    from bot.demo import seed_demo

    async with svc.db.session() as session:
        personas = {p.role: p for p in await seed_demo(session, svc, members_per_unit=4)}
    officer = emulator.user(personas["officer"].user_id, first_name="Officer")
    leader = emulator.user(personas["leader"].user_id, first_name="Leader")
    assert "/members" in personas["officer"].hint and "/roles" in personas["leader"].hint
    for command in ("/members", "/invite", "/pending"):
        said = await say(svc, officer, command)
        assert not said.templates[0].endswith("not_allowed"), command
    said = await say(svc, leader, "/roles")
    assert said.templates == ["roles/overview"]
    said = await say(svc, leader, "/help")
    for command in ("pending", "summary", "broadcast", "invite", "members", "roles"):
        assert f"/{command}" in said.text


async def test_an_officer_invite_puts_the_staff_commands_in_the_menu(svc, emulator, union, people):
    lan = people["lan"]
    async with svc.db.session() as session:
        invite = await factories.invite(session, svc, union.school, Role.officer, max_uses=1)
    said = await act(svc, lan, lambda: lan.start(invite.code))
    assert said.templates == ["join/welcome"]
    menu = [c["command"] for c in emulator.effective_commands(lan.id)]
    assert "pending" in menu and "members" in menu and "roles" not in menu
