"""A broadcast's delivery report as .xlsx: one row per recipient, name, unit and status.

Pure and blocking: callers run it with `asyncio.to_thread` so the bot keeps answering.
Every word in the sheet comes from the caller (rendered from a template), none from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from io import BytesIO

from openpyxl import Workbook
from openpyxl.styles import Font

from bot.services.broadcasts import ReportLine


def build(
    lines: Iterable[ReportLine],
    title: str,
    headers: tuple[str, str, str],
    statuses: Mapping[str, str],
) -> bytes:
    """The workbook's bytes; `statuses` maps a status key (sent, blocked…) to its label."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = re.sub(r"[\\/?*\[\]:]", " ", title)[:31] or "report"  # Excel's rules
    sheet.append(list(headers))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for line in lines:
        row = [line.name, line.unit, statuses.get(line.status, line.status)]
        sheet.append(row)
        for cell in sheet[sheet.max_row]:
            cell.data_type = "s"  # a name starting with "=" is text, never a formula
    widths = (32, 40, 20)
    for column, width in zip("ABC", widths, strict=True):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    out = BytesIO()
    book.save(out)
    return out.getvalue()
