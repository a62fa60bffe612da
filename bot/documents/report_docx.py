"""The six-month / annual report draft as a Word file, laid out as Nghị định 30/2020/NĐ-CP asks.

The words come from a template (content/templates/<locale>/report/draft.html) rendered by the
caller; this module only lays them out, so it is pure and runs in a worker thread. The
rendered text is split into blocks by `::name` lines:

    ::issuer_parent / ::issuer / ::number      left of the header (issuing body, "Số: …")
    ::country / ::motto                         right of the header (the national motto)
    ::place_date / ::title / ::subtitle         below the header
    ::body                                      sections: "## heading", "- bullet",
                                                "| a | b |" table rows, other lines paragraphs
    ::recipients / ::signature                  the footer: "Nơi nhận" left, signature right

Times New Roman throughout (13 pt body, 14 pt title), as the decree's appendix sets.
"""

from __future__ import annotations

import html
import io

from docx import Document
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Cm, Pt
from docx.table import _Cell

FONT = "Times New Roman"
BODY_PT = 13
TITLE_PT = 14
TEXT_WIDTH_CM = 16.5  # A4 less the 3 cm left and 1.5 cm right margins
BLOCKS = (
    "issuer_parent",
    "issuer",
    "number",
    "country",
    "motto",
    "place_date",
    "title",
    "subtitle",
    "body",
    "recipients",
    "signature",
)


def parse_blocks(text: str) -> dict[str, list[str]]:
    """The rendered template as {block: lines}; HTML escapes from autoescaping undone."""
    blocks: dict[str, list[str]] = {name: [] for name in BLOCKS}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = html.unescape(raw.rstrip())
        if line.startswith("::"):
            name = line[2:].strip()
            if name not in blocks:
                raise ValueError(f"unknown report block {name!r}")
            current = blocks[name]
        elif current is not None:
            current.append(line)
    for name, lines in blocks.items():
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        blocks[name] = lines
    return blocks


def _font(run, size: int = BODY_PT, bold: bool = False, italic: bool = False) -> None:
    run.font.name = FONT
    run.font.size = Pt(size)
    run.font.bold = bold
    run.font.italic = italic
    fonts = run._element.get_or_add_rPr().get_or_add_rFonts()
    fonts.set(qn("w:eastAsia"), FONT)


def _paragraph(
    container,
    text: str,
    size: int = BODY_PT,
    bold: bool = False,
    italic: bool = False,
    align=WD_ALIGN_PARAGRAPH.JUSTIFY,
    indent: bool = False,
):
    paragraph = container.add_paragraph()
    paragraph.alignment = align
    paragraph.paragraph_format.space_after = Pt(3)
    if indent:
        paragraph.paragraph_format.first_line_indent = Cm(1)
    _font(paragraph.add_run(text), size, bold, italic)
    return paragraph


def _no_borders(table) -> None:
    borders = table._tbl.tblPr.first_child_found_in("w:tblBorders")
    if borders is not None:
        table._tbl.tblPr.remove(borders)
    element = table._tbl.tblPr.makeelement(qn("w:tblBorders"), {})
    for side in ("top", "left", "bottom", "right", "insideH", "insideV"):
        edge = element.makeelement(qn(f"w:{side}"), {qn("w:val"): "nil"})
        element.append(edge)
    table._tbl.tblPr.append(element)


def _first(cell: _Cell, text: str, **style) -> None:
    """Write into the cell's existing first paragraph (a new cell has one, empty)."""
    paragraph = cell.paragraphs[0]
    paragraph.alignment = style.pop("align", WD_ALIGN_PARAGRAPH.CENTER)
    _font(paragraph.add_run(text), **style)


def _centered(cell: _Cell, text: str, **style) -> None:
    _paragraph(cell, text, align=WD_ALIGN_PARAGRAPH.CENTER, **style)


def _header(document, blocks: dict[str, list[str]]) -> None:
    table = document.add_table(rows=1, cols=2)
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    _no_borders(table)
    left, right = table.rows[0].cells
    left.width, right.width = Cm(7), Cm(9.5)
    parent = blocks["issuer_parent"]
    if parent:
        _first(left, parent[0], size=BODY_PT)
        for line in blocks["issuer"]:
            _centered(left, line, bold=True)
    else:
        issuer = blocks["issuer"] or [""]
        _first(left, issuer[0], bold=True)
        for line in issuer[1:]:
            _centered(left, line, bold=True)
    _centered(left, "———")
    for line in blocks["number"]:
        _centered(left, line)
    country = blocks["country"] or [""]
    _first(right, country[0], size=12, bold=True)
    for line in blocks["motto"]:
        _centered(right, line, size=TITLE_PT, bold=True)
    _centered(right, "———————————")
    for line in blocks["place_date"]:
        _paragraph(document, line, italic=True, align=WD_ALIGN_PARAGRAPH.RIGHT)


def _table(document, rows: list[list[str]]) -> None:
    width = max(len(row) for row in rows)
    table = document.add_table(rows=0, cols=width)
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    table.autofit = False
    first = Cm(5) if width > 2 else Cm(8)
    rest = Cm((TEXT_WIDTH_CM - first.cm) / max(width - 1, 1))
    for column, grid in enumerate(table.columns):  # the grid is what LibreOffice reads
        grid.width = first if column == 0 else rest
    for index, row in enumerate(rows):
        cells = table.add_row().cells
        for column, value in enumerate(row):
            cells[column].width = first if column == 0 else rest
            _first(
                cells[column],
                value,
                size=11,
                bold=index == 0,
                align=WD_ALIGN_PARAGRAPH.LEFT if column == 0 else WD_ALIGN_PARAGRAPH.CENTER,
            )
    document.add_paragraph()


def _body(document, lines: list[str]) -> None:
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            rows.append([cell.strip() for cell in stripped.strip("|").split("|")])
            continue
        if rows:
            _table(document, rows)
            rows = []
        if not stripped:
            continue
        if stripped.startswith("## "):
            _paragraph(document, stripped[3:], bold=True)
        elif stripped.startswith("### "):
            _paragraph(document, stripped[4:], bold=True, italic=True, indent=True)
        else:
            _paragraph(document, stripped, indent=True)


def _footer(document, blocks: dict[str, list[str]]) -> None:
    table = document.add_table(rows=1, cols=2)
    _no_borders(table)
    left, right = table.rows[0].cells
    left.width, right.width = Cm(8), Cm(8.5)
    recipients = blocks["recipients"] or [""]
    _first(left, recipients[0], size=12, bold=True, italic=True, align=WD_ALIGN_PARAGRAPH.LEFT)
    for line in recipients[1:]:
        _paragraph(left, line, size=11, align=WD_ALIGN_PARAGRAPH.LEFT)
    signature = blocks["signature"] or [""]
    _first(right, signature[0], bold=True)
    for line in signature[1:]:
        hint = line.strip().startswith("(")  # "(Ký, ghi rõ họ tên, đóng dấu)"
        _centered(right, line, bold=line.strip().isupper(), italic=hint)


def build(text: str) -> bytes:
    """The .docx bytes of a rendered report template."""
    blocks = parse_blocks(text)
    document = Document()
    section = document.sections[0]
    section.page_height, section.page_width = Cm(29.7), Cm(21)  # A4
    section.top_margin = section.bottom_margin = Cm(2)
    section.left_margin, section.right_margin = Cm(3), Cm(1.5)
    normal = document.styles["Normal"]
    normal.font.name = FONT
    normal.font.size = Pt(BODY_PT)
    normal.element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), FONT)
    _header(document, blocks)
    for line in blocks["title"]:
        _paragraph(document, line, size=TITLE_PT, bold=True, align=WD_ALIGN_PARAGRAPH.CENTER)
    for line in blocks["subtitle"]:
        _paragraph(document, line, size=TITLE_PT, bold=True, align=WD_ALIGN_PARAGRAPH.CENTER)
    _body(document, blocks["body"])
    _footer(document, blocks)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def text_of(data: bytes) -> str:
    """Every paragraph of a .docx, tables included, one a line (tests and previews)."""
    document = Document(io.BytesIO(data))
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    return "\n".join(lines)
