"""The printable pledge (bản đăng ký học tập và làm theo) as a Word document.

Laid out like the forms units hand out: the union body and the national motto side by
side, the title with the year, the year's topic, who is pledging, one heading per section,
the place and date, and the two signature blocks. Every word on it comes from the
`documents/pledge` template (key: text lines), so the wording lives with the other texts;
this module only places them. Blocking work: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import html
from io import BytesIO

from docx import Document
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Cm, Pt

from bot.services.review import PledgeDocument

FONT = "Times New Roman"
SIZE = Pt(13)
TITLE_SIZE = Pt(14)


def _font(run, size=SIZE, bold: bool = False, italic: bool = False) -> None:
    run.font.name = FONT
    run.font.size = size
    run.bold = bold
    run.italic = italic
    # Word picks the East Asian font slot for some Vietnamese letters unless it is set too.
    fonts = run._element.get_or_add_rPr().get_or_add_rFonts()
    fonts.set(qn("w:eastAsia"), FONT)


def _para(container, text: str = "", *, bold=False, italic=False, size=SIZE, center=False):
    paragraph = container.add_paragraph()
    if center:
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
    paragraph.paragraph_format.space_after = Pt(3)
    if text:
        _font(paragraph.add_run(text), size, bold, italic)
    return paragraph


def _cell_lines(cell, lines: list[tuple[str, bool, bool]]) -> None:
    """Centred lines in a table cell: (text, bold, italic)."""
    cell.paragraphs[0].text = ""
    first = True
    for text, bold, italic in lines:
        paragraph = cell.paragraphs[0] if first else cell.add_paragraph()
        first = False
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
        paragraph.paragraph_format.space_after = Pt(0)
        _font(paragraph.add_run(text), SIZE, bold, italic)


def build(doc: PledgeDocument, words: dict[str, str], locale: str = "vi") -> bytes:
    """The .docx bytes; `words` are the `documents/pledge` template's lines."""
    document = Document()
    section = document.sections[0]
    section.page_height, section.page_width = Cm(29.7), Cm(21.0)
    section.left_margin, section.right_margin = Cm(3.0), Cm(2.0)
    section.top_margin, section.bottom_margin = Cm(2.0), Cm(2.0)
    style = document.styles["Normal"]
    style.font.name = FONT
    style.font.size = SIZE

    header = document.add_table(rows=1, cols=2)
    header.alignment = WD_TABLE_ALIGNMENT.CENTER
    left, right = header.rows[0].cells
    body_lines = [(doc.upper_body.upper(), False, False)] if doc.upper_body else []
    body_lines.append((doc.body.upper(), True, False))
    _cell_lines(left, body_lines)
    _cell_lines(right, [(words["motto_1"], True, False), (words["motto_2"], True, False)])

    _para(document)
    _para(document, words["title"], bold=True, size=TITLE_SIZE, center=True)
    _para(document, doc.topic if locale == "vi" else doc.topic_en, italic=True, center=True)
    _para(document)
    for key, value in (
        ("name", doc.member_name),
        ("unit", doc.unit_name),
        ("position", doc.position or words["position_blank"]),
    ):
        paragraph = _para(document)
        _font(paragraph.add_run(words[key] + " "), bold=True)
        _font(paragraph.add_run(value))
    _para(document, words["intro"])
    for index, item in enumerate(doc.sections, 1):
        title = item["title"].get(locale) or item["title"]["vi"]
        _para(document, f"{index}. {title}", bold=True)
        for line in (doc.answers.get(item["key"]) or "").splitlines() or [""]:
            paragraph = _para(document, line)
            paragraph.paragraph_format.first_line_indent = Cm(1)
    if doc.entered_by:
        _para(document, words["entered_by"], italic=True)

    _para(document)
    place = _para(document, words["place_date"], italic=True)
    place.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    signatures = document.add_table(rows=1, cols=2)
    head, member = signatures.rows[0].cells
    _cell_lines(head, [(words["head"], True, False), (words["head_hint"], False, True)])
    _cell_lines(
        member,
        [
            (words["member"], True, False),
            (words["member_hint"], False, True),
            ("", False, False),
            ("", False, False),
            ("", False, False),
            (doc.member_name, True, False),
        ],
    )
    out = BytesIO()
    document.save(out)
    return out.getvalue()


def parse_words(text: str) -> dict[str, str]:
    """`key: text` lines of the rendered `documents/pledge` template (rendered for Telegram,
    so HTML-escaped: a name with "&" must print as "&")."""
    words: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            words[key.strip()] = html.unescape(value.strip())
    return words
