"""The phone-like web chat page of the offline sandbox (``chuyende demo``).

The page is static HTML + JS (no build step, no CDN) that talks to the emulator's JSON
endpoints under ``/_sandbox/``. Bot messages are rendered from the plain text and the entities
the emulator parsed out of the bot's HTML, element by element (no ``innerHTML``), so only
Telegram's formatting can ever appear on the page; user text is shown as text.

``mount(app)`` adds ``GET /`` (the page) and ``/_sandbox/static/*`` (its CSS and JS) to a
Starlette app; ``BotApiEmulator(page=True)`` does this for its own app.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "mount", "page_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Everything the page loads comes from the same origin; no inline script can run.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "chat.html", media_type="text/html", headers=_SECURITY_HEADERS)


async def _no_favicon(request: Request) -> Response:
    return Response(status_code=204)


def page_routes(path: str = "/") -> list[BaseRoute]:
    """The routes of the page: ``path`` serves chat.html, its assets live under
    ``/_sandbox/static/``."""
    return [
        Route(path, _index, methods=["GET"]),
        Route("/favicon.ico", _no_favicon, methods=["GET"]),
        Mount("/_sandbox/static", app=StaticFiles(directory=STATIC_DIR), name="sandbox-static"),
    ]


def mount(app: Starlette, path: str = "/") -> None:
    """Serve the chat page from ``app`` (the app must also serve the ``/_sandbox/`` API)."""
    app.router.routes.extend(page_routes(path))
