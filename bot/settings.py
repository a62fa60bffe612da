"""The one validated settings object, read from the environment and `.env`."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TELEGRAM_API = "https://api.telegram.org"
LOCALES = ("vi", "en")
# Telegram stops redelivering an update after about this long.
TELEGRAM_REDELIVERY_HOURS = 24


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

    # Several processes on one database: the periodic jobs' leader (bot/leader.py) is checked
    # every leader_check_seconds, and the others try to take over every leader_retry_seconds.
    leader_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("CHUYENDE_LEADER_RETRY_SECONDS", "leader_retry_seconds"),
    )
    leader_check_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("CHUYENDE_LEADER_CHECK_SECONDS", "leader_check_seconds"),
    )
    # Where the per-bot send budget lives (bot/ratestore.py). "auto": Redis when
    # CHUYENDE_REDIS_URL is set, else PostgreSQL when DATABASE_URL is PostgreSQL (several
    # processes may share it), else memory (SQLite is one process).
    rate_backend: Literal["auto", "memory", "redis", "postgres"] = Field(
        default="auto", validation_alias=AliasChoices("CHUYENDE_RATE_BACKEND", "rate_backend")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CHUYENDE_REDIS_URL", "redis_url")
    )
    # How many processes share the bot: while Redis/PostgreSQL cannot be reached, each sends
    # at per_bot_rate / processes on its own, so together they still stay within the rate.
    processes: int = Field(
        default=3, ge=1, validation_alias=AliasChoices("CHUYENDE_PROCESSES", "processes")
    )

    # How long a read-only turn (/topic, a lesson) may use a person or campaign kept in memory
    # (bot/readcache.py). Commits in any process invalidate at once on PostgreSQL; this bounds
    # what a process cannot hear of (the CLI on the same SQLite file). 0 turns the cache off.
    read_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        validation_alias=AliasChoices("CHUYENDE_READ_CACHE_SECONDS", "read_cache_seconds"),
    )

    # How long an update's id is kept to recognise Telegram's redelivery of it (the leader
    # deletes older ids every hour). Telegram gives up on an update after about 24 hours, so
    # a window at or under that would let a late retry run a second time.
    dedupe_retention_hours: int = Field(
        default=48,
        validation_alias=AliasChoices(
            "CHUYENDE_DEDUPE_RETENTION_HOURS", "dedupe_retention_hours"
        ),
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

    @field_validator("dedupe_retention_hours")
    @classmethod
    def _outlasts_telegram_retries(cls, value: int) -> int:
        if value <= TELEGRAM_REDELIVERY_HOURS:
            raise ValueError(
                f"CHUYENDE_DEDUPE_RETENTION_HOURS must be more than {TELEGRAM_REDELIVERY_HOURS}:"
                f" Telegram redelivers an update for up to {TELEGRAM_REDELIVERY_HOURS} hours,"
                " and a retry that comes after its id was deleted would run a second time"
            )
        return value

    @field_validator("telegram_api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def resolved_rate_backend(self) -> str:
        """memory, redis or postgres: what "auto" means for this configuration."""
        if self.rate_backend != "auto":
            return self.rate_backend
        if self.redis_url:
            return "redis"
        return "postgres" if self.database_url.startswith("postgresql") else "memory"

    @model_validator(mode="after")
    def _backend_has_its_service(self) -> Settings:
        if self.rate_backend == "redis" and not self.redis_url:
            raise ValueError("CHUYENDE_RATE_BACKEND=redis needs CHUYENDE_REDIS_URL")
        if self.rate_backend == "postgres" and not self.database_url.startswith("postgresql"):
            raise ValueError("CHUYENDE_RATE_BACKEND=postgres needs a PostgreSQL DATABASE_URL")
        return self

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
