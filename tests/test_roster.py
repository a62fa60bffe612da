"""Roster import (CLI and chat) and the member-list export, as an officer would use them."""

from __future__ import annotations

import asyncio
import io
import unicodedata
from datetime import UTC, date, datetime, timedelta

import pytest
from openpyxl import Workbook, load_workbook
from sqlmodel import select
from typer.testing import CliRunner

from bot.cli import app
from bot.db import Database
from bot.models import (
    Campaign,
    ChatState,
    Member,
    MemberEvent,
    MemberEventKind,
    Pledge,
    PledgeStatus,
    ReviewDecision,
    Role,
    Unit,
)
from bot.services import tallies
from bot.services.roles import grant_role
from tests import factories
from tests.dialog import act, label, press, say

runner = CliRunner()
TITLE = ["DANH SÁCH ĐOÀN VIÊN CÔNG ĐOÀN TRƯỜNG THPT PHAN THIẾT"]
HEADER = ["STT", "Họ và tên", "Ngày sinh", "Giới tính", "Tổ công đoàn", "Số điện thoại",
          "Chức vụ", "Email", "Mã ĐV"]  # fmt: skip


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def xlsx(*rows: list) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def school_rows(**changes) -> list[list]:
    """The school's roster as typed in Excel: a title row, a blank row, then the header."""
    rows = {
        "lan": [1, "Nguyễn Thị Lan", "10/4/1985", "Nữ", "Tổ Toán", 912345678, "Giáo viên",
                "lan@thpt-pt.edu.vn", "GV01"],
        "binh": [2, nfd("Trần Văn Bình"), datetime(1990, 1, 2), "Nam", "Tổ Văn",
                 "+84 913 111 222", None, None, "GV02"],
        "cuc": [3, "Lê Thị Cúc", 32874, "nữ", "tổ  toán", "0914.222.333", "Tổ trưởng", None, None],
        "dung": [4, "Phạm Văn Dũng", "1/2/1980", None, None, "84915333444", None, None, None],
    }  # fmt: skip
    rows.update(changes)
    return [TITLE, [], HEADER, *rows.values()]


@pytest.fixture
def admin(tmp_path, monkeypatch):
    """`chuyende …` against a fresh, migrated SQLite file with BT → PT → SCH, FAC."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CHUYENDE_LOCALE", "en")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)

    def run(*args: str):
        return runner.invoke(app, list(args))

    assert run("db", "upgrade").exit_code == 0
    run("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận")
    run("unit", "add", "PT", "LĐLĐ TP Phan Thiết", "--parent", "BT")
    run("unit", "add", "SCH", "CĐCS Trường THPT Phan Thiết", "--parent", "PT")
    run("unit", "add", "FAC", "CĐCS Công ty May", "--parent", "PT")
    run.url = url
    run.path = tmp_path
    return run


def write(admin, name: str, data: bytes | str) -> str:
    path = admin.path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return str(path)


def query(url: str, fn):
    async def main():
        db = Database(url)
        try:
            async with db.reader() as session:
                return await fn(session)
        finally:
            await db.dispose()

    return asyncio.run(main())


async def _all(session, model):
    return list((await session.exec(select(model))).all())


async def _counts_match(session) -> bool:
    return await tallies.stored(session) == await tallies.counted_from_scratch(session)


def members_by_name(admin) -> dict[str, tuple[Member, Unit]]:
    async def fetch(session):
        rows = await session.exec(select(Member, Unit).where(Member.unit_id == Unit.id))
        return {member.full_name: (member, unit) for member, unit in rows.all()}

    return query(admin.url, fetch)


# --- the command line ----------------------------------------------------------------------


def test_import_reads_a_real_world_file_into_units_and_counts(admin):
    path = write(admin, "school.xlsx", xlsx(*school_rows()))
    result = admin("import-roster", path, "--unit", "SCH")
    assert result.exit_code == 0, result.output
    assert "New members:     4" in result.output
    assert "SCH-TO-TOAN  Tổ Toán" in result.output and "SCH-TO-VAN  Tổ Văn" in result.output

    members = members_by_name(admin)
    assert set(members) == {"Nguyễn Thị Lan", "Trần Văn Bình", "Lê Thị Cúc", "Phạm Văn Dũng"}
    lan, lan_unit = members["Nguyễn Thị Lan"]
    assert (lan.phone, lan.birth_date, lan.gender) == ("+84912345678", date(1985, 4, 10), "female")
    assert (lan.position, lan.email, lan.member_code) == ("Giáo viên", "lan@thpt-pt.edu.vn", "GV01")
    assert lan_unit.code == "SCH-TO-TOAN"
    binh, binh_unit = members["Trần Văn Bình"]  # NFD in the file, NFC in the database
    assert (binh.phone, binh.birth_date, binh_unit.code) == (
        "+84913111222",
        date(1990, 1, 2),
        "SCH-TO-VAN",
    )
    cuc, cuc_unit = members["Lê Thị Cúc"]  # an Excel serial date; "tổ  toán" is Tổ Toán
    assert (cuc.phone, cuc.birth_date, cuc_unit.code) == (
        "+84914222333",
        date(1990, 1, 1),
        "SCH-TO-TOAN",
    )
    dung, dung_unit = members["Phạm Văn Dũng"]
    assert (dung.phone, dung_unit.code) == ("+84915333444", "SCH")

    listing = admin("unit", "list").output
    assert "      SCH-TO-TOAN  Tổ Toán  [team]" in listing

    async def check(session):
        events = await _all(session, MemberEvent)
        assert sorted(e.kind for e in events) == [MemberEventKind.imported] * 4
        assert all(e.by_member_id is None for e in events)
        assert await _counts_match(session)
        stored, _ = await tallies.stored(session)
        return sum(c["members"] for c in stored.values())

    assert query(admin.url, check) == 4


def test_the_same_file_again_changes_nothing(admin):
    path = write(admin, "school.xlsx", xlsx(*school_rows()))
    assert admin("import-roster", path, "--unit", "SCH").exit_code == 0
    before = query(admin.url, lambda s: _all(s, MemberEvent))
    again = admin("import-roster", path, "--unit", "SCH")
    assert again.exit_code == 0, again.output
    assert "New members:     0" in again.output and "Unchanged:       4" in again.output
    assert "New units:       0" in again.output
    assert len(query(admin.url, lambda s: _all(s, MemberEvent))) == len(before)
    assert len(query(admin.url, lambda s: _all(s, Unit))) == 6


def test_an_edited_file_updates_only_what_changed(admin):
    path = write(admin, "school.xlsx", xlsx(*school_rows()))
    assert admin("import-roster", path, "--unit", "SCH").exit_code == 0
    edited = school_rows(
        # a new phone number: recognised by the member code, phone and position updated
        lan=[1, "Nguyễn Thị Lan", "10/4/1985", "Nữ", "Tổ Toán", "0987 654 321", "Hiệu phó",
             "lan@thpt-pt.edu.vn", "GV01"],
        binh=[2, "Trần Văn Bình", "02/01/1990", "Nam", "Tổ Toán", "0913111222", None, None,
              "GV02"],
    )  # fmt: skip
    result = admin("import-roster", write(admin, "edited.xlsx", xlsx(*edited)), "--unit", "SCH")
    assert result.exit_code == 0, result.output
    assert "Updated:         1" in result.output and "Moved unit:      1" in result.output
    assert "Unchanged:       2" in result.output

    members = members_by_name(admin)
    lan, _ = members["Nguyễn Thị Lan"]
    assert (lan.phone, lan.position) == ("+84987654321", "Hiệu phó")
    binh, binh_unit = members["Trần Văn Bình"]
    assert binh_unit.code == "SCH-TO-TOAN"

    async def check(session):
        events = await _all(session, MemberEvent)
        later = [e for e in events if e.kind != MemberEventKind.imported]
        assert await _counts_match(session)
        return later

    later = query(admin.url, check)
    kinds = {(e.member_id, e.kind): e for e in later}
    assert set(kinds) == {(lan.id, MemberEventKind.updated), (binh.id, MemberEventKind.transferred)}
    assert kinds[(lan.id, MemberEventKind.updated)].note == "phone, position"
    moved = kinds[(binh.id, MemberEventKind.transferred)]
    assert moved.to_unit_id == binh_unit.id and moved.from_unit_id != binh_unit.id


def test_two_rows_for_one_member_are_refused(admin):
    assert admin("import-roster", write(admin, "s.xlsx", xlsx(*school_rows())), "--unit", "SCH")
    rows = [
        ["Họ và tên", "Số điện thoại", "Mã ĐV"],
        ["Nguyễn Thị Lan", "0912345678", None],  # Lan by her phone
        ["Nguyễn T. Lan", "0987000111", "GV01"],  # Lan again, by her member code
    ]
    result = admin("import-roster", write(admin, "twice.xlsx", xlsx(*rows)), "--unit", "SCH")
    assert result.exit_code == 1
    assert "Row 3: the same member as row 2" in result.output
    assert members_by_name(admin)["Nguyễn Thị Lan"][0].phone == "+84912345678"


def test_sub_units_are_matched_by_code_or_name_and_created(admin):
    admin("unit", "add", "T1", "Tổ Một", "--parent", "SCH")
    rows = [
        ["Họ và tên", "SĐT", "Mã đơn vị", "Đơn vị"],
        ["An", "0911000001", "T1", None],  # an existing code
        ["Ba", "0911000002", None, "tổ một"],  # an existing name under SCH
        ["Ca", "0911000003", "T9", "Tổ Chín"],  # a new code with its name
        ["Da", "0911000004", None, "Tổ Mười"],  # a new name: the code is generated
        ["Em", "0911000005", "SCH", None],  # the importing unit itself
        ["Gi", "0911000006", "T9", "Tổ 9"],  # the new code again, however it is named
        ["Ha", "0911000007", "SCH-TO-MUOI", None],  # the generated code, named in the file
    ]
    result = admin("import-roster", write(admin, "u.xlsx", xlsx(*rows)), "--unit", "SCH")
    assert result.exit_code == 0, result.output
    units = {name: unit.code for name, (_, unit) in members_by_name(admin).items()}
    assert units == {"An": "T1", "Ba": "T1", "Ca": "T9", "Da": "SCH-TO-MUOI", "Em": "SCH",
                     "Gi": "T9", "Ha": "SCH-TO-MUOI"}  # fmt: skip
    assert "New units:       2" in result.output


def test_every_bad_row_is_reported_by_number_and_nothing_is_imported(admin):
    factory = xlsx(["Họ và tên", "Số điện thoại"], ["Công Nhân", "0916000111"])
    assert admin("import-roster", write(admin, "fac.xlsx", factory), "--unit", "FAC").exit_code == 0
    rows = [
        TITLE,
        ["Họ và tên", "Số điện thoại", "Ngày sinh", "Email", "Mã đơn vị", "Giới tính", "Mã số"],
        [None, "0916000001", None, None, None, None, None],
        ["A", "12345", None, None, None, None, None],
        ["B", "0916000002", None, None, None, None, None],
        ["C", "0916 000 002", None, None, None, None, None],
        ["D", "0916000111", None, None, None, None, None],
        ["E", "0916000003", "31/2/1990", None, None, None, None],
        ["F", "0916000004", None, "f@", None, None, None],
        ["G", None, None, None, None, None, None],
        ["H", "0916000005", None, None, "FAC", None, None],
        ["I", "0916000006", None, None, None, "X", None],
        ["J", None, None, None, None, None, "X1"],
        ["K", None, None, None, None, None, "X1"],
        ["L", "0916000007", "1/1/1970", "l@x.vn", None, "Nam", "X2"],
    ]
    result = admin("import-roster", write(admin, "bad.xlsx", xlsx(*rows)), "--unit", "SCH")
    assert result.exit_code == 1, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Row ")]
    assert lines == [
        "Row 3: the full name is missing",
        "Row 4: not a valid phone number: 12345",
        "Row 6: phone number 0916 000 002 is also on row 5",
        "Row 7: phone number 0916000111 belongs to a member of a unit outside "
        "CĐCS Trường THPT Phan Thiết",
        "Row 8: not a valid date of birth: 31/2/1990 (write it like 10/4/1985)",
        "Row 9: not a valid email address: f@",
        "Row 10: a phone number or a member code is needed to recognise this person",
        "Row 11: the unit with code FAC is not inside CĐCS Trường THPT Phan Thiết",
        "Row 12: unclear gender: X (write Nam or Nữ)",
        "Row 14: member code X1 is also on row 13",
    ]
    assert "Nothing imported: 10 problems" in result.output
    assert set(members_by_name(admin)) == {"Công Nhân"}


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (
            "\ufeff" + nfd("Họ và tên;SĐT;Ngày sinh\n") + nfd("Đỗ Thị Hoà;912345678;5/6/1991\n"),
            "vi",
        ),
        ("Full name,Phone,Date of birth\nĐỗ Thị Hoà,+84912345678,1991-06-05\n", "en"),
        (
            "STT,Họ và tên đệm,Tên,Điện thoại,Ngày sinh\n1,Đỗ Thị,Hoà,0912 345 678,05-06-1991\n",
            "split",
        ),
    ],
)
def test_csv_with_bom_semicolons_nfd_english_or_split_name_headers(admin, text, name):
    result = admin("import-roster", write(admin, f"{name}.csv", text), "--unit", "SCH")
    assert result.exit_code == 0, result.output
    [(member, _)] = members_by_name(admin).values()
    assert member.full_name == "Đỗ Thị Hoà" == unicodedata.normalize("NFC", member.full_name)
    assert (member.phone, member.birth_date) == ("+84912345678", date(1991, 6, 5))


def test_a_dry_run_reports_and_writes_nothing(admin):
    path = write(admin, "school.xlsx", xlsx(*school_rows()))
    result = admin("import-roster", path, "--unit", "SCH", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run" in result.output and "New members:     4" in result.output
    assert members_by_name(admin) == {}
    assert len(query(admin.url, lambda s: _all(s, Unit))) == 4


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"hello", "not a spreadsheet"),
        ("broken.xlsx", b"PK\x03\x04 not really", "cannot be read"),
        ("nohead.xlsx", xlsx(["a", "b"], ["c", "d"]), "No header row"),
    ],
)
def test_a_file_that_is_no_roster_is_explained(admin, name, data, message):
    result = admin("import-roster", write(admin, name, data), "--unit", "SCH")
    assert result.exit_code == 1
    assert message in result.output


def test_export_members_lists_the_subtree(admin, monkeypatch):
    admin("import-roster", write(admin, "s.xlsx", xlsx(*school_rows())), "--unit", "SCH")
    factory = xlsx(["Họ và tên", "Số điện thoại"], ["Công Nhân", "0916000111"])
    admin("import-roster", write(admin, "f.xlsx", factory), "--unit", "FAC")
    monkeypatch.setenv("CHUYENDE_LOCALE", "vi")
    out = admin.path / "members.xlsx"
    result = admin("export-members", "--unit", "SCH", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Đã ghi 4 đoàn viên" in result.output
    rows = list(load_workbook(out).active.iter_rows(values_only=True))
    assert rows[0][:3] == ("Mã đơn vị / Unit code", "Đơn vị / Unit", "Họ và tên / Full name")
    assert [row[2] for row in rows[1:]] == [
        "Phạm Văn Dũng",  # the unit's own members first, then each sub-unit by given name
        "Lê Thị Cúc",
        "Nguyễn Thị Lan",
        "Trần Văn Bình",
    ]
    assert rows[1][5] == "0915333444"
    assert {row[7] for row in rows[1:]} == {"Chưa có chuyên đề"}  # no campaign applied


# --- the export's contents -----------------------------------------------------------------


async def test_export_shows_each_members_pledge_status(svc, union):
    from bot.documents.members_xlsx import labels_from, members_xlsx
    from bot.services.exports import collect_member_rows

    now = svc.clock.now()
    async with svc.db.session() as session:
        team = Unit(code="SCH-T", name="Tổ Toán", level="team", parent_id=union.school.id,
                    depth=union.school.depth + 1)  # fmt: skip
        session.add(team)
        await session.flush()
        team.path = f"{union.school.path}{team.id}/"
        await session.commit()
        campaign = (await session.exec(select(Campaign))).first()
        people = {}
        for name, unit, phone in [
            ("Nguyễn Thị Lan", union.school, "+84912000001"),
            ("Trần Văn Bình", union.school, "+84912000002"),
            ("Lê Thị Cúc", union.school, "+84912000003"),
            ("Phạm Văn Dũng", union.school, "+84912000004"),
            ("Võ Thị Em", team, "+84912000005"),
            ("Đã Nghỉ", union.school, "+84912000006"),
            ("Công Nhân", union.factory, "+84912000007"),
        ]:
            people[name] = await factories.make_member(session, svc, unit, name, phone)
        await factories.link(session, svc, people["Nguyễn Thị Lan"], 801)
        left = people["Đã Nghỉ"]
        left.active = False
        session.add(left)
        filed = datetime(2024, 4, 1, 20, 0, tzinfo=UTC)  # 03:00 on 2/4 in Vietnam
        for name, late, review in [
            ("Nguyễn Thị Lan", False, None),
            ("Trần Văn Bình", True, None),
            ("Lê Thị Cúc", False, ReviewDecision.approved),
            ("Võ Thị Em", False, ReviewDecision.returned),
        ]:
            session.add(Pledge(member_id=people[name].id, campaign_id=campaign.id,
                               status=PledgeStatus.submitted, current_version=1,
                               first_submitted_at=filed, late=late, review=review))  # fmt: skip
        await session.commit()
        listing = await collect_member_rows(session, union.school, now, svc.clock.tz)
    data = members_xlsx(listing, labels_from(svc.renderer, "vi", listing.year))
    rows = list(load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
    assert rows[0][6:] == ("Dùng bot / On the bot", "Bản đăng ký 2024 / Pledge 2024",
                           "Ngày nộp / Date filed")  # fmt: skip
    table = {row[2]: (row[0], row[5], row[6], row[7], row[8]) for row in rows[1:]}
    day = datetime(2024, 4, 2)
    assert table == {
        "Trần Văn Bình": ("SCH", "0912000002", "Chưa", "Trễ hạn", day),
        "Lê Thị Cúc": ("SCH", "0912000003", "Chưa", "Đã duyệt", day),
        "Phạm Văn Dũng": ("SCH", "0912000004", "Chưa", "Chưa nộp", None),
        "Nguyễn Thị Lan": ("SCH", "0912000001", "Có", "Đúng hạn", day),
        "Võ Thị Em": ("SCH-T", "0912000005", "Chưa", "Trả lại để sửa", day),
    }
    assert [row[2] for row in rows[1:]][:4] == [
        "Trần Văn Bình",  # Bình, Cúc, Dũng, Lan: by given name
        "Lê Thị Cúc",
        "Phạm Văn Dũng",
        "Nguyễn Thị Lan",
    ]


# --- in the chat ---------------------------------------------------------------------------

CHAT_FILE = [
    ["Họ và tên", "Số điện thoại", "Tổ công đoàn"],
    ["Nguyễn Thị Lan", 912345678, "Tổ Toán"],
    ["Trần Văn Bình", "0913111222", "Tổ Văn"],
    ["Lê Thị Cúc", "+84914222333", None],
]


async def _person(svc, emulator, unit, name, phone, user_id, role=None, *more_units):
    async with svc.db.session() as session:
        member = await factories.make_member(session, svc, unit, name, phone)
        await factories.link(session, svc, member, user_id)
        for grant_unit in (unit, *more_units) if role else ():
            await grant_role(session, member, grant_unit, role, svc.clock.now())
        await session.commit()
        await tallies.recount(session, [unit.id])
        await session.commit()
    user = emulator.user(user_id, first_name=name.split()[-1])
    user.member_id = member.id
    return user


@pytest.fixture
async def officer(svc, bot, emulator, union):
    return await _person(svc, emulator, union.school, "Đặng Văn Sơn", "+84911000999", 701,
                         Role.officer)  # fmt: skip


async def _send(svc, user, data: bytes, filename: str):
    return await act(svc, user, lambda: user.send_document(data, filename))


async def _school_members(svc, union) -> list[Member]:
    async with svc.db.reader() as session:
        rows = await session.exec(
            select(Member, Unit).where(
                Member.unit_id == Unit.id, Unit.path.startswith(union.school.path)
            )
        )
        return [member for member, _ in rows.all()]


async def test_officer_previews_then_confirms_an_import(svc, officer, union):
    said = await _send(svc, officer, xlsx(*CHAT_FILE), "danh-sach.xlsx")
    assert said.templates == ["roster/preview"]
    assert "Thêm mới: 3" in said.text and "Tổ Toán, Tổ Văn" in said.text
    assert said.last.buttons == [[label(svc, "ro_confirm"), label(svc, "ro_cancel")]]
    assert len(await _school_members(svc, union)) == 1  # a preview writes nothing

    confirm = said.last.callback_data(label(svc, "ro_confirm"))
    said = await press(svc, officer, label(svc, "ro_confirm"))
    assert said.templates == ["roster/imported"]
    assert "thêm mới 3" in said.text and "tạo 2 đơn vị mới" in said.text
    members = await _school_members(svc, union)
    assert len(members) == 4
    async with svc.db.reader() as session:
        events = await _all(session, MemberEvent)
        assert {e.by_member_id for e in events} == {officer.member_id}
        assert await _counts_match(session)
        assert await _all(session, ChatState) == []

    # the same button again: the flow is over, nothing happens twice
    await officer.press_data(confirm)
    assert (await officer.wait_callback_answer()).get("show_alert") is True
    assert len(await _school_members(svc, union)) == 4


async def test_cancel_imports_nothing(svc, officer, union):
    await _send(svc, officer, xlsx(*CHAT_FILE), "ds.xlsx")
    said = await press(svc, officer, label(svc, "ro_cancel"))
    assert said.templates == ["roster/cancelled"]
    assert len(await _school_members(svc, union)) == 1
    async with svc.db.reader() as session:
        assert await _all(session, ChatState) == []


async def test_stale_and_forged_roster_buttons_are_refused(svc, officer, union, emulator):
    first = (await _send(svc, officer, xlsx(*CHAT_FILE), "ds.xlsx")).last
    stale = first.callback_data(label(svc, "ro_confirm"))
    await _send(svc, officer, xlsx(*CHAT_FILE[:2]), "ds2.xlsx")  # a newer file replaces it
    for data in (stale, "ro:ok:999", "ro:ok:x", "ro:zz:1", "ro:u:1:999", "ro:ok"):
        mark = len(svc.renderer.history)
        await officer.press_data(data)
        answer = await officer.wait_callback_answer()
        assert answer.get("show_alert") is True, data
        assert list(svc.renderer.history)[mark:] == ["common/stale_button"], data
    # another person pressing the officer's button
    other = await _person(svc, emulator, union.school, "Kẻ Lạ", "+84911000888", 702)
    await say(svc, other, "/help")
    await other.press_data(officer.last_bot_message.callback_data(label(svc, "ro_confirm")))
    assert (await other.wait_callback_answer()).get("show_alert") is True
    assert len(await _school_members(svc, union)) == 2


async def test_a_member_without_the_role_is_refused(svc, bot, emulator, union):
    member = await _person(svc, emulator, union.school, "Nguyễn Văn Tư", "+84911000777", 703)
    said = await _send(svc, member, xlsx(*CHAT_FILE), "ds.xlsx")
    assert said.templates == ["roster/not_allowed"]
    said = await act(svc, member, lambda: member.send_sticker())
    assert said.templates == ["common/hint"]  # other media still get the usual hint
    assert len(await _school_members(svc, union)) == 1


async def test_a_document_during_the_pledge_wizard_gets_the_wizards_reply(svc, officer):
    await say(svc, officer, "/pledge")
    said = await _send(svc, officer, xlsx(*CHAT_FILE), "ds.xlsx")
    assert said.templates == ["common/text_expected"]


@pytest.mark.parametrize(
    ("filename", "data", "words"),
    [
        ("bao-cao.pdf", b"%PDF-1.4", "không phải bảng tính"),
        ("hong.xlsx", b"PK\x03\x04garbage", "Không đọc được tệp Excel"),
        ("khong-tieu-de.csv", b"a,b\nc,d\n", "Không tìm thấy dòng tiêu đề"),
        ("lon.csv", b"x" * (5 * 1024 * 1024 + 1), "tối đa 5 MB"),
    ],
)
async def test_a_file_that_is_no_roster_is_refused_in_the_chat(
    svc, officer, union, filename, data, words
):
    said = await _send(svc, officer, data, filename)
    assert said.templates == ["roster/bad_file"]
    assert words in said.text and "Chưa nhập gì" in said.text
    async with svc.db.reader() as session:
        assert await _all(session, ChatState) == []


async def test_bad_rows_are_listed_in_the_chat_and_nothing_can_be_confirmed(svc, officer, union):
    rows = [*CHAT_FILE, ["", "0915000000", None], ["Vũ Văn X", "12", None]]
    said = await _send(svc, officer, xlsx(*rows), "ds.xlsx")
    assert said.templates == ["roster/problems"]
    assert "Dòng 5: thiếu họ và tên" in said.text
    assert "Dòng 6: số điện thoại không hợp lệ: 12" in said.text
    assert said.last.buttons == []
    assert len(await _school_members(svc, union)) == 1


async def test_an_officer_of_two_units_picks_one(svc, bot, emulator, union):
    officer = await _person(svc, emulator, union.school, "Đặng Văn Sơn", "+84911000999", 704,
                            Role.officer, union.factory)  # fmt: skip
    said = await _send(svc, officer, xlsx(*CHAT_FILE), "ds.xlsx")
    assert said.templates == ["roster/choose_unit"]
    assert said.last.buttons == [[union.school.name], [union.factory.name], [label(svc, "cancel")]]
    said = await press(svc, officer, union.factory.name)
    assert said.templates == ["roster/preview"] and union.factory.name in said.text
    said = await press(svc, officer, label(svc, "ro_confirm"))
    assert said.templates == ["roster/imported"]
    async with svc.db.reader() as session:
        rows = await session.exec(
            select(Member)
            .join(Unit, Unit.id == Member.unit_id)
            .where(Unit.path.startswith(union.factory.path))
        )
        assert len(rows.all()) == 3
        assert await _counts_match(session)


async def test_a_role_revoked_between_preview_and_confirm_imports_nothing(svc, officer, union):
    from bot.models import RoleGrant

    await _send(svc, officer, xlsx(*CHAT_FILE), "ds.xlsx")
    async with svc.db.session() as session:
        for grant in await _all(session, RoleGrant):
            grant.revoked_at = svc.clock.now() - timedelta(seconds=1)
            session.add(grant)
        await session.commit()
    said = await press(svc, officer, label(svc, "ro_confirm"))
    assert said.templates == ["roster/not_allowed"]
    assert len(await _school_members(svc, union)) == 1
