"""Bare python-telegram-bot echo, the baseline of the load benchmarks.

    TELEGRAM_BOT_TOKEN=... TELEGRAM_API_BASE_URL=http://127.0.0.1:PORT \
        CHUYENDE_PER_BOT_RATE=1000 python bench/echo_bot.py

The same PTB Application plumbing as `chuyende run` (long polling, the project's
LaneRateLimiter at the same per-bot rate, its per-chat update processor), with one handler
that answers every text with the same text: no database, no templates. What the load
benchmarks measure above this is the application.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTB_TIMEDELTA", "true")

from telegram import Update  # noqa: E402
from telegram.ext import Application, ContextTypes, MessageHandler, filters  # noqa: E402

from bot.ratelimit import LaneRateLimiter  # noqa: E402
from bot.update_processor import PerChatUpdateProcessor  # noqa: E402


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(update.effective_message.text or "?")


def main() -> None:
    base = os.environ["TELEGRAM_API_BASE_URL"].rstrip("/")
    application = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(f"{base}/bot")
        .base_file_url(f"{base}/file/bot")
        .rate_limiter(LaneRateLimiter(per_bot=float(os.environ.get("CHUYENDE_PER_BOT_RATE", 30))))
        .concurrent_updates(PerChatUpdateProcessor())
        .build()
    )
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.run_polling(allowed_updates=None)


if __name__ == "__main__":
    main()
