"""Joining: invites, consent, phone and name, through the emulator and the real Application."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.models import ChatIdentity, Member, RoleGrant
from tests import factories
from tests.dialog import act, label, press, say, templates_since


async def _agree(svc, user, code: str) -> None:
    """Open the invite and accept the personal-data notice."""
    await say(svc, user, f"/start {code}")
    await press(svc, user, label(svc, "consent_yes"))


async def _rows(svc, model):
    async with svc.db.reader() as session:
        return list((await session.exec(select(model))).all())


async def test_start_without_code_explains_how_to_get_an_invite(svc, bot, emulator, union):
    stranger = emulator.user(501, first_name="Hoa")
    said = await say(svc, stranger, "/start")
    assert said.templates == ["start/no_invite"]
    assert "link mời" in said.text
    assert await _rows(svc, Member) == []


async def test_a_strangers_first_message_typed_text_is_answered(svc, bot, emulator, union):
    """Typed text is first tried as a wizard answer on a reader; someone never seen must
    still be recorded and answered (not dropped as an update already handled)."""
    stranger = emulator.user(502, first_name="Minh")
    said = await say(svc, stranger, "Xin chào, tôi muốn đăng ký học tập.")
    assert said.templates == ["start/no_invite"]
    said = await say(svc, stranger, "/pledge")
    assert said.templates == ["common/join_first"]


@pytest.mark.parametrize(
    ("setup", "template"),
    [
        ("unknown", "start/invite_unknown"),
        ("expired", "start/invite_expired"),
        ("used_up", "start/invite_used_up"),
        ("too_long", "start/invite_unknown"),
    ],
)
async def test_unusable_invites_each_get_their_own_explanation(
    svc, bot, emulator, union, setup, template
):
    async with svc.db.session() as session:
        invite = await factories.invite(session, svc, union.school, max_uses=1)
        code = invite.code
        if setup == "expired":
            await factories.expire(session, invite, svc)
        elif setup == "used_up":
            invite.uses = 1
            session.add(invite)
            await session.commit()
    code = {"unknown": "khong-co-ma-nay", "too_long": "x" * 64}.get(setup, code)
    said = await say(svc, emulator.user(502, first_name="Hoa"), f"/start {code}")
    assert said.templates == [template]
    assert await _rows(svc, Member) == []


async def test_new_person_consents_shares_phone_and_types_name(svc, bot, emulator, union):
    async with svc.db.session() as session:
        invite = await factories.invite(session, svc, union.school)
    hoa = emulator.user(503, first_name="Hoa")

    said = await say(svc, hoa, f"/start {invite.code}")
    assert said.templates == ["start/consent"]
    assert "Nghị định 13/2023" in said.text

    said = await press(svc, hoa, label(svc, "consent_yes"))
    assert said.templates == ["start/consent_recorded", "join/ask_phone"]
    assert hoa.contact_requested

    said = await act(svc, hoa, lambda: hoa.share_contact("0987 654 321"))
    assert said.templates == ["join/ask_name"]

    said = await say(svc, hoa, "  nguyễn   thị hoa ")
    assert said.templates == ["join/welcome"]
    assert "CĐCS Trường THPT Phan Thiết" in said.text

    [member] = await _rows(svc, Member)
    assert (member.full_name, member.phone, member.unit_id) == (
        "nguyễn thị hoa",
        "+84987654321",
        union.school.id,
    )
    [identity] = await _rows(svc, ChatIdentity)
    assert identity.member_id == member.id and identity.consent_at is not None


async def test_roster_member_is_found_by_phone_and_never_duplicated(svc, bot, emulator, union):
    async with svc.db.session() as session:
        await factories.make_member(session, svc, union.school, "Trần Văn Nam", "+84912000111")
        invite = await factories.invite(session, svc, union.district)  # district-wide notice
    nam = emulator.user(504, first_name="Nam")
    await _agree(svc, nam, invite.code)
    said = await act(svc, nam, lambda: nam.share_contact("912000111"))  # Excel dropped the 0
    assert said.templates == ["join/welcome"]
    assert "Trần Văn Nam" in said.text

    again = await say(svc, nam, f"/start {invite.code}")
    assert again.templates == ["join/already_joined"]
    assert len(await _rows(svc, Member)) == 1
    async with svc.db.reader() as session:
        refreshed = await session.get(type(invite), invite.id)
    assert refreshed.uses == 1


async def test_new_phone_relinks_the_member_to_the_new_account(svc, bot, emulator, union):
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Lê Thị Mai", "+84933000222"
        )
        await factories.link(session, svc, member, 505)
        invite = await factories.invite(session, svc, union.school)
    new_account = emulator.user(506, first_name="Mai")
    await _agree(svc, new_account, invite.code)
    said = await act(svc, new_account, lambda: new_account.share_contact("+84933000222"))
    assert said.templates == ["join/welcome"]
    identities = {i.external_user_id: i.member_id for i in await _rows(svc, ChatIdentity)}
    assert identities == {"505": None, "506": member.id}
    old = emulator.user(505, first_name="Mai")
    said = await say(svc, old, "/mypledge")
    assert said.templates == ["common/join_first"]


async def test_someone_elses_contact_is_refused(svc, bot, emulator, union):
    async with svc.db.session() as session:
        await factories.make_member(session, svc, union.school, "Phạm Văn Tâm", "+84944000333")
        invite = await factories.invite(session, svc, union.school)
    intruder = emulator.user(507, first_name="X")
    await _agree(svc, intruder, invite.code)
    said = await act(svc, intruder, lambda: intruder.share_contact("+84944000333", user_id=999))
    assert said.templates == ["join/phone_not_own"]
    said = await say(svc, intruder, "0944000333")  # typing the number is not proof either
    assert said.templates == ["join/press_phone_button"]
    [identity] = await _rows(svc, ChatIdentity)
    assert identity.member_id is None


async def test_phone_of_another_unit_is_refused_without_naming_it(svc, bot, emulator, union):
    async with svc.db.session() as session:
        await factories.make_member(session, svc, union.factory, "Võ Thị Yến", "+84955000444")
        invite = await factories.invite(session, svc, union.school)
    yen = emulator.user(508, first_name="Yến")
    await _agree(svc, yen, invite.code)
    said = await act(svc, yen, lambda: yen.share_contact("+84955000444"))
    assert said.templates == ["join/phone_elsewhere"]
    assert "May" not in said.text
    assert len(await _rows(svc, Member)) == 1


async def test_declining_consent_keeps_nothing(svc, bot, emulator, union):
    async with svc.db.session() as session:
        invite = await factories.invite(session, svc, union.school)
    user = emulator.user(509, first_name="K")
    await say(svc, user, f"/start {invite.code}")
    said = await press(svc, user, label(svc, "consent_no"))
    assert said.templates == ["start/consent_declined"]
    assert await _rows(svc, Member) == []
    [identity] = await _rows(svc, ChatIdentity)
    assert identity.consent_at is None


@pytest.mark.parametrize("name", [".", "A", "Nguyen 123", "x" * 101, "Hoa", "\u200b"])
async def test_bad_names_are_refused_and_the_step_stays(svc, bot, emulator, union, name):
    async with svc.db.session() as session:
        invite = await factories.invite(session, svc, union.school)
    user = emulator.user(510, first_name="K")
    await _agree(svc, user, invite.code)
    await act(svc, user, lambda: user.share_contact("+84966000555"))
    said = await say(svc, user, name)
    assert said.templates == ["join/name_invalid"]
    assert await _rows(svc, Member) == []
    said = await say(svc, user, "Đỗ Thị Hạnh")
    assert said.templates == ["join/welcome"]


async def test_officer_invite_grants_the_role_at_its_unit(svc, bot, emulator, union):
    from bot.models import Role

    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Bùi Văn Long", "+84977000666"
        )
        await factories.link(session, svc, member, 511)
        invite = await factories.invite(session, svc, union.school, Role.officer, max_uses=1)
    said = await say(svc, emulator.user(511, first_name="Long"), f"/start {invite.code}")
    assert said.templates == ["join/welcome"]
    [grant] = await _rows(svc, RoleGrant)
    assert (grant.member_id, grant.unit_id, grant.role) == (
        member.id,
        union.school.id,
        Role.officer,
    )


async def test_personal_command_in_a_group_asks_for_a_private_chat(svc, bot, emulator, union):
    async with svc.db.session() as session:
        member = await factories.make_member(
            session, svc, union.school, "Hồ Thị Nga", "+84988000777"
        )
        await factories.link(session, svc, member, 512)
    nga = emulator.user(512, first_name="Nga")
    group = emulator.group(-100512, "Tổ công đoàn 1").add(nga)
    mark = len(svc.renderer.history)
    await nga.send("/mypledge", chat=group)
    [reply] = await nga.replies_until_idle(idle=0.2, chat=group)
    assert templates_since(svc, mark) == ["common/private_only"]
    assert "Hồ Thị Nga" not in reply.text
    assert nga.transcript == []  # nothing was sent privately either
