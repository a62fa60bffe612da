"""Domain refusals. Each names the template that explains it to the person."""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A rule said no; `template` tells the person why, `context` fills it in."""

    def __init__(self, template: str, **context: Any) -> None:
        super().__init__(template)
        self.template = template
        self.context = context
