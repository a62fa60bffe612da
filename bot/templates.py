"""Every user-facing text is a Jinja2 template in content/templates/<locale>/."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bot.settings import LOCALES

TEMPLATE_SUFFIX = ".html"


def vn_date(value: date | datetime) -> str:
    """10/4/2024: the way Vietnamese documents write dates."""
    return f"{value.day}/{value.month}/{value.year}"


def vn_datetime(value: datetime, tz: tzinfo) -> str:
    """08:05 5/4/2024 in the members' time zone (stored times are UTC, naive on SQLite)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(tz)
    return f"{local.hour:02d}:{local.minute:02d} {vn_date(local)}"


@dataclass(frozen=True)
class Rendered:
    template: str
    locale: str
    text: str


class Renderer:
    """One Jinja environment per locale: autoescape on, undefined names fail loudly.

    `history` keeps the names of the last templates rendered, so tests can assert which
    template answered a message without parsing its wording.
    """

    def __init__(
        self, templates_dir: Path, default_locale: str = "vi", tz: tzinfo | None = None
    ) -> None:
        self.templates_dir = templates_dir
        self.default_locale = default_locale
        self.tz = tz or ZoneInfo("Asia/Ho_Chi_Minh")
        self._envs = {loc: self._make_env(templates_dir / loc, self.tz) for loc in LOCALES}
        self.history: deque[str] = deque(maxlen=2000)

    @staticmethod
    def _make_env(directory: Path, tz: tzinfo) -> Environment:
        env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            # Templates ship with the code: a changed one comes with a restart. Checking each
            # file's mtime on every render was an os.stat per message.
            auto_reload=False,
        )
        env.filters["vndate"] = vn_date
        env.filters["vndatetime"] = partial(vn_datetime, tz=tz)
        return env

    def render(self, name: str, locale: str | None = None, /, **context: Any) -> Rendered:
        locale = locale if locale in self._envs else self.default_locale
        template = self._envs[locale].get_template(name + TEMPLATE_SUFFIX)
        text = template.render(locale=locale, **context).strip()
        self.history.append(name)
        return Rendered(template=name, locale=locale, text=text)

    def text(self, name: str, locale: str | None = None, /, **context: Any) -> str:
        return self.render(name, locale, **context).text

    def pairs(self, name: str, locale: str | None = None, /, **context: Any) -> dict[str, str]:
        """A template of `key: text` lines (button labels, commands, chart and sheet words)."""
        lines = self.text(name, locale, **context).splitlines()
        return {
            k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)
        }
