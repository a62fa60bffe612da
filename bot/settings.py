"""The one validated settings object, read from the environment and `.env`."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TELEGRAM_API = "https://api.telegram.org"
LOCALES = ("vi", "en")


class Settings(BaseSettings):
    """Every knob the bot has, under the env names fixed in DESIGN.md."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "telegram_bot_token")
    )
    telegram_api_base_url: str = Field(
        default=TELEGRAM_API,
        validation_alias=AliasChoices("TELEGRAM_API_BASE_URL", "telegram_api_base_url"),
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///chuyende.db",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    timezone: str = Field(
        default="Asia/Ho_Chi_Minh", validation_alias=AliasChoices("CHUYENDE_TIMEZONE", "timezone")
    )
    locale: str = Field(default="vi", validation_alias=AliasChoices("CHUYENDE_LOCALE", "locale"))
    webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHUYENDE_WEBHOOK_SECRET", "webhook_secret")
    )
    # Where `chuyende run --webhook` listens; a TLS proxy in front forwards Telegram to it.
    webhook_listen: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("CHUYENDE_WEBHOOK_LISTEN", "webhook_listen"),
    )
    webhook_port: int = Field(
        default=8443,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("CHUYENDE_WEBHOOK_PORT", "webhook_port"),
    )
    now: datetime | None = Field(default=None, validation_alias=AliasChoices("CHUYENDE_NOW", "now"))
    # Telegram's ceiling is ~30/s per bot (paid broadcasts lift it); background uses 80% of it.
    per_bot_rate: float = Field(
        default=30.0, gt=0, validation_alias=AliasChoices("CHUYENDE_PER_BOT_RATE", "per_bot_rate")
    )
    # Reminders, digests and outbox delivery; tests that drive ticks by hand turn it off.
    background: bool = Field(
        default=True, validation_alias=AliasChoices("CHUYENDE_BACKGROUND", "background")
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone, so a typo fails at start-up
        return value

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        if value not in LOCALES:
            raise ValueError(f"CHUYENDE_LOCALE must be one of {', '.join(LOCALES)}")
        return value

    @field_validator("telegram_api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def bot_api_url(self) -> str:
        """PTB's `base_url`: the token is appended to it."""
        return f"{self.telegram_api_base_url}/bot"

    @property
    def bot_file_url(self) -> str:
        """PTB's `base_file_url`: downloads follow the same API base as requests."""
        return f"{self.telegram_api_base_url}/file/bot"
