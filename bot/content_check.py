"""``chuyende content check [DIR]``: everything wrong with a content folder, in one list.

Checks the content files through :mod:`bot.catalog` (the campaign files with their optional
``reminders:`` blocks, ``reminders.yaml`` and ``holidays.yaml``, the last two required) and
the message templates under ``templates/vi/`` and ``templates/en/``:

- every template (``*.j2``, ``*.html``, ``*.txt``) has its twin in the other locale;
- each parses as Jinja2, with the settings the bot renders with;
- an ``en/`` template is not a copy of its ``vi/`` twin (when it has words of its own);
- its literal HTML uses only the tags and entities Telegram's HTML parse mode accepts.

A content folder without ``templates/`` passes the template checks (nothing to check).
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from bot.catalog import ContentProblem, collect_catalog

__all__ = ["LOCALES", "TELEGRAM_TAGS", "ContentProblem", "check_content", "check_templates"]

TEMPLATES_DIR = "templates"
LOCALES = ("vi", "en")
TEMPLATE_SUFFIXES = frozenset({".j2", ".html", ".txt"})

# https://core.telegram.org/bots/api#html-style
TELEGRAM_TAGS = frozenset(
    {
        "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
        "blockquote", "span", "tg-spoiler", "tg-emoji",
    }
)  # fmt: skip
TELEGRAM_ENTITIES = frozenset({"lt", "gt", "amp", "quot"})

_TAG_RE = re.compile(r"<\s*/?\s*([A-Za-z][A-Za-z0-9-]*)")
_ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_MARKUP_RE = re.compile(r"<[^<>]*>|&#?\w+;")
_LETTER_RE = re.compile(r"[^\W\d_]")


def check_content(content_dir: Path) -> list[ContentProblem]:
    """Every problem of the content folder ``content_dir``: campaigns, reminder policy,
    holidays and templates. An empty list means it is fine."""
    content_dir = Path(content_dir)
    if not content_dir.is_dir():
        return [ContentProblem(content_dir.as_posix(), "", "not a folder")]
    _, problems = collect_catalog(content_dir)
    return problems + check_templates(content_dir)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def _templates(locale_dir: Path) -> dict[str, Path]:
    if not locale_dir.is_dir():
        return {}
    return {
        path.relative_to(locale_dir).as_posix(): path
        for path in sorted(locale_dir.rglob("*"))
        if path.is_file() and path.suffix in TEMPLATE_SUFFIXES and not path.name.startswith(".")
    }


def _literal_text(env: jinja2.Environment, source: str) -> list[tuple[int, str]]:
    """The template's own text outside ``{{ }}``, ``{% %}`` and ``{# #}``, with the line
    each piece starts on."""
    return [(line, value) for line, kind, value in env.lex(source) if kind == "data"]


def _markup_problems(file: str, pieces: list[tuple[int, str]]) -> list[ContentProblem]:
    problems = []
    allowed = ", ".join(sorted(TELEGRAM_TAGS))
    for start_line, text in pieces:
        for match in _TAG_RE.finditer(text):
            tag = match.group(1).lower()
            if tag not in TELEGRAM_TAGS:
                line = start_line + text.count("\n", 0, match.start())
                problems.append(
                    ContentProblem(
                        file,
                        f"line {line}",
                        f"<{tag}> is not allowed in Telegram HTML; use only: {allowed}",
                    )
                )
        for match in _ENTITY_RE.finditer(text):
            if match.group(1) not in TELEGRAM_ENTITIES:
                line = start_line + text.count("\n", 0, match.start())
                problems.append(
                    ContentProblem(
                        file,
                        f"line {line}",
                        f"&{match.group(1)}; is not a Telegram HTML entity; "
                        "use the character itself, or &lt; &gt; &amp; &quot;",
                    )
                )
    return problems


def _has_words(pieces: list[tuple[int, str]]) -> bool:
    text = _MARKUP_RE.sub(" ", "".join(value for _, value in pieces))
    return bool(_LETTER_RE.search(text))


def _squashed(text: str) -> str:
    return "".join(text.split())


def check_templates(content_dir: Path) -> list[ContentProblem]:
    """The template problems of ``content_dir`` (none if it has no ``templates/`` folder)."""
    templates_dir = Path(content_dir) / TEMPLATES_DIR
    if not templates_dir.is_dir():
        return []
    env = _environment()
    found = {locale: _templates(templates_dir / locale) for locale in LOCALES}
    sources: dict[tuple[str, str], str] = {}
    literal: dict[tuple[str, str], list[tuple[int, str]]] = {}
    problems: list[ContentProblem] = []

    for locale in LOCALES:
        for name, path in found[locale].items():
            file = f"{TEMPLATES_DIR}/{locale}/{name}"
            for other in LOCALES:
                if other != locale and name not in found[other]:
                    problems.append(
                        ContentProblem(
                            file,
                            "",
                            f"has no {other}/ twin; add {TEMPLATES_DIR}/{other}/{name}",
                        )
                    )
            try:
                source = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                problems.append(ContentProblem(file, "", f"not UTF-8 text ({exc.reason})"))
                continue
            sources[locale, name] = source
            try:
                env.parse(source, name=name)
                pieces = _literal_text(env, source)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(
                    ContentProblem(file, f"line {exc.lineno}", f"Jinja syntax error: {exc.message}")
                )
                continue
            literal[locale, name] = pieces
            problems += _markup_problems(file, pieces)

    for name in found["en"]:
        vi_source, en_source = sources.get(("vi", name)), sources.get(("en", name))
        if vi_source is None or en_source is None:
            continue
        pieces = literal.get(("en", name), [(1, en_source)])
        if _squashed(vi_source) == _squashed(en_source) and _has_words(pieces):
            problems.append(
                ContentProblem(
                    f"{TEMPLATES_DIR}/en/{name}", "", "is a copy of its vi/ twin, translate it"
                )
            )
    return problems
