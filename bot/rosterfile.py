"""Reading a roster spreadsheet (.xlsx or .csv) into clean rows and the problems of each row.

Pure: no database. The header row is found among the first rows (a title often sits above
it), headers are matched ignoring case, diacritics and spacing, in Vietnamese or English.
Values are normalised the way real files need: phones that Excel stored as numbers without
the leading 0, `+84…`, dots and spaces; NFD text; dates as d/m/yyyy text, date cells or
Excel serial numbers. The database checks (a phone of another unit's member…) are the
roster service's.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.text import clean_name, normalize_phone, search_key

HEADER_SCAN_ROWS = 10
NAME_MAX = 120
POSITION_MAX = 120
CODE_MAX = 64
EMAIL_MAX = 255
SPREADSHEET_SUFFIXES = (".xlsx", ".csv")

# Field -> the header words that name it (compared after search_key and punctuation folding).
HEADERS: dict[str, tuple[str, ...]] = {
    "full_name": ("ho va ten", "ho ten", "ten day du", "full name", "fullname", "name"),
    # Many school and office rosters split the name: "Họ và tên đệm" | "Tên".
    "family_name": ("ho va ten dem", "ho va dem", "ho dem", "ho", "family name", "last name"),
    "given_name": ("ten", "given name", "first name"),
    "birth_date": (
        "ngay sinh",
        "ngay thang nam sinh",
        "date of birth",
        "birth date",
        "birthday",
        "dob",
    ),
    "gender": ("gioi tinh", "gender", "sex"),
    "unit_name": ("don vi", "ten don vi", "unit", "unit name"),
    "unit_code": ("ma don vi", "unit code"),
    "team_name": ("to cong doan", "ten to", "to", "team"),
    "team_code": ("ma to", "team code"),
    "phone": (
        "so dien thoai",
        "dien thoai",
        "dien thoai di dong",
        "sdt",
        "so dt",
        "dt",
        "phone",
        "phone number",
        "mobile",
    ),
    "position": ("chuc vu", "chuc danh", "position", "job title"),
    "email": ("email", "e mail", "thu dien tu"),
    "member_code": (
        "ma doan vien",
        "ma dv",
        "ma so",
        "ma so doan vien",
        "member code",
        "member id",
    ),
}
_BY_WORDS = {words: name for name, options in HEADERS.items() for words in options}
# Which unit columns make up each level below the importing unit, top first.
UNIT_LEVELS = (("unit_code", "unit_name"), ("team_code", "team_name"))
_PUNCTUATION = re.compile(r"[^a-z0-9]+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T].*)?$")
_EXCEL_EPOCH = date(1899, 12, 30)
_GENDERS = {
    "nam": "male",
    "male": "male",
    "m": "male",
    "nu": "female",
    "female": "female",
    "f": "female",
    "khac": "other",
    "other": "other",
}


class BadFile(Exception):
    """The file cannot be read as a roster at all; `reason` names the template's case."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UnitRef:
    """One level of the sub-unit a row names: its code, its name, or both."""

    code: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int  # as the spreadsheet numbers it
    reason: str  # name_missing, phone_invalid, phone_duplicate, ...
    value: str = ""
    other_row: int | None = None


@dataclass(slots=True)
class RosterRow:
    row: int
    full_name: str
    phone: str | None = None  # +84…
    member_code: str | None = None
    position: str | None = None
    birth_date: date | None = None
    gender: str | None = None
    email: str | None = None
    units: tuple[UnitRef, ...] = ()


@dataclass
class ParsedRoster:
    """The good rows, every problem, and which fields the file has a column for."""

    rows: list[RosterRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    fields: frozenset[str] = frozenset()

    @property
    def has_units(self) -> bool:
        return any(code in self.fields or name in self.fields for code, name in UNIT_LEVELS)


def is_spreadsheet_name(filename: str | None) -> bool:
    return bool(filename) and Path(filename or "").suffix.lower() in SPREADSHEET_SUFFIXES


def header_field(text: Any) -> str | None:
    """The field a header names ("Họ và tên / Full name" -> full_name), or None."""
    if not isinstance(text, str):
        return None
    candidates = [text, *re.split(r"[/()\n]", text)]
    for candidate in candidates:
        words = _PUNCTUATION.sub(" ", search_key(candidate)).strip()
        if words in _BY_WORDS:
            return _BY_WORDS[words]
    return None


Progress = Callable[[int], None]  # called with the number of rows read since the last call


def read(data: bytes | Path, filename: str, progress: Progress | None = None) -> ParsedRoster:
    """Parse a roster; raises BadFile when it is no spreadsheet or has no header row."""
    rows, _total = open_rows(data, filename)
    return parse_rows(rows, progress)


def open_rows(data: bytes | Path, filename: str) -> tuple[Iterator[tuple[Any, ...]], int | None]:
    """The file's rows as tuples of cell values, and how many the file says it has (if it does)."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".xlsx":
        return _xlsx_rows(data)
    if suffix == ".csv":
        return _csv_rows(data)
    raise BadFile("not_spreadsheet")


def _xlsx_rows(data: bytes | Path) -> tuple[Iterator[tuple[Any, ...]], int | None]:
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        book = load_workbook(source, read_only=True, data_only=True)
    except (BadZipFile, KeyError, OSError, ValueError) as error:
        raise BadFile("unreadable") from error
    sheet = book.worksheets[0] if book.worksheets else None
    if sheet is None:
        raise BadFile("no_header")
    total = sheet.max_row if isinstance(sheet.max_row, int) and sheet.max_row > 1 else None
    # Some programs write a wrong dimension ("A1"); read what is really there.
    sheet.reset_dimensions()

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            yield from sheet.iter_rows(values_only=True)
        finally:
            book.close()

    return rows(), total


def _csv_rows(data: bytes | Path) -> tuple[Iterator[tuple[Any, ...]], int | None]:
    raw = data if isinstance(data, bytes | bytearray) else Path(data).read_bytes()
    try:
        text = bytes(raw).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadFile("not_utf8") from error
    head = text[:4096]
    delimiter = max((",", ";", "\t"), key=head.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return (tuple(row) for row in reader), text.count("\n") + 1


def parse_rows(rows: Iterable[tuple[Any, ...]], progress: Progress | None = None) -> ParsedRoster:
    """Find the header among the first rows, then read every row below it."""
    iterator = iter(rows)
    columns: dict[str, int] = {}
    header_row = 0
    for number, row in enumerate(iterator, start=1):
        found = _header_columns(row)
        named = "full_name" in found or "given_name" in found
        if named and len(found) >= 2:
            columns, header_row = found, number
            break
        if number >= HEADER_SCAN_ROWS:
            break
    if not columns:
        raise BadFile("no_header")
    fields = set(columns) - {"family_name", "given_name"}
    parsed = ParsedRoster(fields=frozenset(fields | {"full_name"}))
    phones: dict[str, int] = {}
    codes: dict[str, int] = {}
    pending = 0
    for number, row in enumerate(iterator, start=header_row + 1):
        pending += 1
        if progress is not None and pending >= 1000:
            progress(pending)
            pending = 0
        values = {name: _cell(row, index) for name, index in columns.items()}
        if all(value is None for value in values.values()):
            continue
        problems: list[RowProblem] = []
        clean = _clean_row(number, values, problems)
        if clean.phone is not None:
            first = phones.setdefault(clean.phone, number)
            if first != number:
                problems.append(RowProblem(number, "phone_duplicate", values["phone"], first))
        if clean.member_code is not None and clean.phone is None:
            first = codes.setdefault(clean.member_code, number)
            if first != number:
                problems.append(RowProblem(number, "code_duplicate", clean.member_code, first))
        if problems:
            parsed.problems.extend(problems)
        else:
            parsed.rows.append(clean)
    if progress is not None and pending:
        progress(pending)
    return parsed


def _header_columns(row: tuple[Any, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, value in enumerate(row):
        name = header_field(value)
        if name is not None and name not in found:
            found[name] = index
    return found


def _cell(row: tuple[Any, ...], index: int) -> Any:
    value = row[index] if index < len(row) else None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = clean_name(str(value))
    return text or None


def _clean_row(number: int, values: dict[str, Any], problems: list[RowProblem]) -> RosterRow:
    name = _text(values.get("full_name"))
    if name is None and values.get("given_name") is not None:
        name = _text(f"{_text(values.get('family_name')) or ''} {_text(values['given_name'])}")
    if name is None:
        problems.append(RowProblem(number, "name_missing"))
    elif len(name) > NAME_MAX:
        problems.append(RowProblem(number, "name_too_long", str(len(name))))
    phone = None
    raw_phone = values.get("phone")
    if raw_phone is not None:
        phone = normalize_phone(_phone_text(raw_phone))
        if phone is None:
            problems.append(RowProblem(number, "phone_invalid", str(raw_phone)))
    code = _text(values.get("member_code"))
    if code is not None and len(code) > CODE_MAX:
        problems.append(RowProblem(number, "code_too_long", code[:20]))
    if phone is None and code is None and raw_phone is None:
        problems.append(RowProblem(number, "key_missing"))
    birth = None
    raw_birth = values.get("birth_date")
    if raw_birth is not None:
        birth = parse_date(raw_birth)
        if birth is None:
            problems.append(RowProblem(number, "date_invalid", _shown(raw_birth)))
    gender = None
    raw_gender = _text(values.get("gender"))
    if raw_gender is not None:
        gender = _GENDERS.get(_PUNCTUATION.sub(" ", search_key(raw_gender)).strip())
        if gender is None:
            problems.append(RowProblem(number, "gender_invalid", raw_gender))
    email = _text(values.get("email"))
    if email is not None and (len(email) > EMAIL_MAX or not _EMAIL.match(email)):
        problems.append(RowProblem(number, "email_invalid", email[:60]))
    position = _text(values.get("position"))
    if position is not None and len(position) > POSITION_MAX:
        problems.append(RowProblem(number, "position_too_long", str(len(position))))
    units: list[UnitRef] = []
    for code_field, name_field in UNIT_LEVELS:
        if code_field not in values and name_field not in values:
            continue  # the file has no column for this level
        unit_code = _text(values.get(code_field))
        unit_name = _text(values.get(name_field))
        if unit_code is None and unit_name is None:
            break
        if (unit_code and len(unit_code) > CODE_MAX) or (unit_name and len(unit_name) > 255):
            problems.append(RowProblem(number, "unit_too_long", (unit_code or unit_name or "")))
            break
        units.append(UnitRef(unit_code, unit_name))
    return RosterRow(
        row=number,
        full_name=name or "",
        phone=phone,
        member_code=code,
        position=position,
        birth_date=birth,
        gender=gender,
        email=email,
        units=tuple(units),
    )


def _phone_text(value: Any) -> str:
    """Excel keeps 0912345678 typed as a number as 912345678 (an int or a float)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.strftime("%d/%m/%Y")
    return str(value)[:40]


def parse_date(value: Any) -> date | None:
    """d/m/yyyy, dd/mm/yyyy (also with . or -), yyyy-mm-dd, a date cell or an Excel serial."""
    result: date | None = None
    if isinstance(value, datetime):
        result = value.date()
    elif isinstance(value, date):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if 1 <= value < 80000:  # Excel serial day numbers (1900 system)
            result = _EXCEL_EPOCH + timedelta(days=int(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            if match := _DATE.match(text):
                day, month, year = (int(part) for part in match.groups())
                result = date(year, month, day)
            elif match := _ISO_DATE.match(text):
                year, month, day = (int(part) for part in match.groups())
                result = date(year, month, day)
        except ValueError:
            return None
    if result is None or not 1900 <= result.year <= 2100:
        return None
    return result
