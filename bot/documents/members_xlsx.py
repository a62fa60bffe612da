"""The member list as .xlsx: one row per active member, with their pledge status.

Pure: rows and labels in, a workbook out (openpyxl write-only mode, so 100,000 rows never
sit in memory as cell objects). Labels come from the `documents/members_xlsx` template, one
`key: label` a line, so the headers are Vietnamese with English beside them.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from bot.services.exports import MemberListing, MemberRow

COLUMNS = (
    ("unit_code", 14),
    ("unit", 34),
    ("full_name", 28),
    ("member_code", 14),
    ("position", 22),
    ("phone", 14),
    ("on_bot", 10),
    ("pledge", 18),
    ("filed", 12),
)
TEMPLATE = "documents/members_xlsx"
DATE_FORMAT = "d/m/yyyy"
CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def labels_from(renderer: Any, locale: str, year: int | None = None) -> dict[str, str]:
    """The `key: label` lines of the template, for `write_members`."""
    pairs = renderer.pairs(TEMPLATE, locale, year=year)
    return {key: html.unescape(value) for key, value in pairs.items()}


def write_members(stream: IO[bytes], listing: MemberListing, labels: dict[str, str]) -> None:
    """Write the workbook for `listing` to a binary stream."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet(labels["sheet"][:31])
    for index, (_key, width) in enumerate(COLUMNS):
        sheet.column_dimensions[chr(ord("A") + index)].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for key, _width in COLUMNS:
        cell = WriteOnlyCell(sheet, value=labels[key])
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for row in listing.rows:
        sheet.append(_values(sheet, row, labels))
    book.save(stream)


def members_xlsx(listing: MemberListing, labels: dict[str, str]) -> bytes:
    """The workbook as bytes (for sending as a document)."""
    buffer = io.BytesIO()
    write_members(buffer, listing, labels)
    return buffer.getvalue()


def _values(sheet: Any, row: MemberRow, labels: dict[str, str]) -> Iterable[Any]:
    filed: Any = None
    if row.filed is not None:
        filed = WriteOnlyCell(sheet, value=row.filed)
        filed.number_format = DATE_FORMAT
    return (
        row.unit_code,
        row.unit_name,
        row.full_name,
        row.member_code,
        row.position,
        row.phone,
        labels["yes"] if row.on_bot else labels["no"],
        labels[row.status],
        filed,
    )
