"""A broadcast's delivery report as .xlsx: one row per recipient, name, unit and status.

Pure and blocking: callers run it with `asyncio.to_thread` so the bot keeps answering.
Every word in the sheet comes from the caller (rendered from a template), none from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from io import BytesIO

from openpyxl import Workbook
from openpyxl.styles import Font

from bot.services.broadcasts import ReportLine


def build(
    lines: Iterable[ReportLine], headers: tuple[str, str, str], statuses: Mapping[str, str]
) -> bytes:
    """The workbook's bytes; `statuses` maps a status key (sent, blocked…) to its label."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = headers[2][:31] or "report"
    sheet.append(list(headers))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for line in lines:
        sheet.append([line.name, line.unit, statuses.get(line.status, line.status)])
    widths = (32, 40, 20)
    for column, width in zip("ABC", widths, strict=True):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    out = BytesIO()
    book.save(out)
    return out.getvalue()
