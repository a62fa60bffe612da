"""`chuyende`: the admin's command line (Typer)."""

from __future__ import annotations

import asyncio
import html
import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from bot.models import Role, UnitLevel
from bot.services.errors import Refusal
from bot.settings import Settings

app = typer.Typer(
    help="chuyende: the yearly study-topic bot for trade-union members.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
unit_app = typer.Typer(help="The union tree.", no_args_is_help=True)
campaign_app = typer.Typer(help="Shipped campaigns and putting one in force.", no_args_is_help=True)
content_app = typer.Typer(help="Campaign content and templates.", no_args_is_help=True)
roles_app = typer.Typer(help="Officer and leader roles held at units.", no_args_is_help=True)
member_app = typer.Typer(help="One member's roster entry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(unit_app, name="unit")
app.add_typer(campaign_app, name="campaign")
app.add_typer(content_app, name="content")
app.add_typer(roles_app, name="roles")
app.add_typer(member_app, name="member")


def _say(name: str, **context) -> None:
    """Print an admin message from its template (plain text, no Telegram markup)."""
    from bot.runtime import make_services

    svc = make_services(Settings())
    typer.echo(html.unescape(svc.renderer.text(name, svc.settings.locale, **context)))


def _run(coroutine_factory):
    """Run one async admin action; a refusal prints its explanation and exits 1."""
    from bot.runtime import make_services

    async def main():
        svc = make_services(Settings())
        try:
            return await coroutine_factory(svc)
        except Refusal as refusal:
            text = svc.renderer.text(refusal.template, svc.settings.locale, **refusal.context)
            typer.echo(html.unescape(text), err=True)
            raise typer.Exit(1) from None
        finally:
            await svc.db.dispose()

    return asyncio.run(main())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations up to the newest."""
    from bot.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    _say("cli/db_upgraded")


@unit_app.command("add")
def unit_add(
    code: str,
    name: str,
    parent: Annotated[str | None, typer.Option(help="Code of the parent unit")] = None,
    level: Annotated[
        UnitLevel | None, typer.Option(help="Default: one level below the parent")
    ] = None,
) -> None:
    """Add a unit to the union tree."""
    from bot.services.units import add_unit

    async def action(svc):
        async with svc.db.session() as session:
            return await add_unit(session, code, name, parent, level)

    unit = _run(action)
    _say("cli/unit_added", unit=unit)


@unit_app.command("list")
def unit_list() -> None:
    """Show the union tree."""
    from bot.services.units import list_units

    async def action(svc):
        async with svc.db.reader() as session:
            return await list_units(session)

    _say("cli/unit_list", units=_run(action))


@campaign_app.command("list")
def campaign_list() -> None:
    """The shipped campaigns: id, year, issuing body, topic."""
    from bot.catalog import load_catalog

    catalog = load_catalog()
    _say("cli/campaign_list", campaigns=sorted(catalog.campaigns.values(), key=lambda c: c.year))


def _parse_deadlines(values: list[str]) -> dict[str, date]:
    overrides: dict[str, date] = {}
    for value in values:
        name, _, day = value.partition("=")
        try:
            overrides[name.strip()] = date.fromisoformat(day.strip())
        except ValueError:
            raise typer.BadParameter(f"{value!r}: expected NAME=YYYY-MM-DD") from None
    return overrides


def _parse_policy(offsets: str | None, window: str | None) -> dict | None:
    """The unit's own reminder policy from the command line; the service validates values."""
    policy: dict = {}
    if offsets is not None:
        try:
            policy["offsets_days"] = [int(part) for part in offsets.split(",") if part.strip()]
        except ValueError:
            raise typer.BadParameter(f"{offsets!r}: expected days like 7,3,1,0") from None
    if window is not None:
        start, sep, end = window.partition("-")
        if not sep:
            raise typer.BadParameter(f"{window!r}: expected HH:MM-HH:MM")
        policy["window"] = {"start": start.strip(), "end": end.strip()}
    return policy or None


@campaign_app.command("apply")
def campaign_apply(
    campaign_id: Annotated[str, typer.Argument(metavar="ID")],
    unit: Annotated[str, typer.Option(help="Code of the unit whose subtree it reaches")],
    deadline: Annotated[
        list[str] | None,
        typer.Option(help="The unit's own last day, NAME=YYYY-MM-DD (repeatable)"),
    ] = None,
    reminder_offsets: Annotated[
        str | None,
        typer.Option(help="Days before each last day to remind, e.g. 5,2,0 (default 7,3,1,0)"),
    ] = None,
    reminder_window: Annotated[
        str | None, typer.Option(help="Local sending window, e.g. 08:00-20:00")
    ] = None,
) -> None:
    """Put a shipped campaign (topic, lessons, deadlines) in force for a unit's subtree."""
    from bot.services.campaigns import apply_campaign
    from bot.services.units import require_unit

    overrides = _parse_deadlines(deadline or [])
    policy = _parse_policy(reminder_offsets, reminder_window)

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            campaign = await apply_campaign(
                session, svc.catalog, campaign_id, target, svc.clock.now(), overrides, policy
            )
            return campaign, target

    campaign, target = _run(action)
    _say("cli/campaign_applied", campaign=campaign, unit=target)


@app.command("invite")
def invite(
    unit: Annotated[str, typer.Option(help="Code of the unit to join")],
    role: Annotated[Role, typer.Option(help="member, officer or leader")] = Role.member,
    uses: Annotated[
        int | None, typer.Option(help="How many people may use it (default: no limit)")
    ] = None,
    days: Annotated[int, typer.Option(help="Days until it expires")] = 30,
    bot_username: Annotated[
        str | None, typer.Option(envvar="CHUYENDE_BOT_USERNAME", help="The bot's @username")
    ] = None,
) -> None:
    """Print an invite code and its deep link https://t.me/<bot>?start=<code>."""
    from bot.services.invites import create_invite, deep_link
    from bot.services.units import require_unit

    async def action(svc):
        username = bot_username or await _bot_username(svc.settings)
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            created = await create_invite(session, target, svc.clock.now(), role, uses, days)
        return created, target, username

    created, target, username = _run(action)
    _say(
        "cli/invite_created",
        invite=created,
        unit=target,
        link=deep_link(username, created.code) if username else None,
    )


PhoneOption = Annotated[str | None, typer.Option(help="The member's phone number")]
CodeOption = Annotated[str | None, typer.Option(help="The member's code (mã đoàn viên)")]
RoleOption = Annotated[Role, typer.Option(help="officer or leader")]


@app.command("grant")
def grant(
    unit: Annotated[str, typer.Option(help="Code of the unit the role is held at")],
    role: RoleOption,
    phone: PhoneOption = None,
    member_code: CodeOption = None,
) -> None:
    """Make a member officer or leader at a unit (reaches its subtree)."""
    from bot.services import roles
    from bot.services.units import require_unit

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            member = await roles.find_member(session, phone, member_code)
            _, new = await roles.grant(session, member, target, role, svc.clock.now())
        return member, target, new, await _refresh_menus(svc, [member.id])

    member, target, new, refreshed = _run(action)
    _say("cli/role_granted", member=member, unit=target, role=role.value, new=new)
    _say("cli/menus_refreshed", refreshed=refreshed)


@app.command("revoke")
def revoke(
    unit: Annotated[str, typer.Option(help="Code of the unit the role is held at")],
    role: RoleOption,
    phone: PhoneOption = None,
    member_code: CodeOption = None,
) -> None:
    """End a member's role at a unit; the grant's history is kept."""
    from bot.services import roles
    from bot.services.units import require_unit

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            member = await roles.find_member(session, phone, member_code)
            await roles.revoke(session, member, target, role, svc.clock.now())
        return member, target, await _refresh_menus(svc, [member.id])

    member, target, refreshed = _run(action)
    _say("cli/role_revoked", member=member, unit=target, role=role.value)
    _say("cli/menus_refreshed", refreshed=refreshed)


@roles_app.command("end")
def roles_end(unit: Annotated[str, typer.Option(help="Code of the unit")]) -> None:
    """A new executive committee was elected: every role held AT the unit ends."""
    from bot.services import roles
    from bot.services.units import require_unit

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            ended = await roles.end_roles_at(session, target, svc.clock.now())
        refreshed = await _refresh_menus(svc, [member.id for _, member in ended])
        return target, ended, refreshed

    target, ended, refreshed = _run(action)
    _say("cli/roles_ended", unit=target, ended=ended)
    if ended:
        _say("cli/menus_refreshed", refreshed=refreshed)


@member_app.command("transfer")
def member_transfer(
    to: Annotated[str, typer.Option(help="Code of the destination unit")],
    phone: PhoneOption = None,
    member_code: CodeOption = None,
) -> None:
    """Move a member to another unit; their counts move with them."""
    from bot.services import lifecycle, roles
    from bot.services.units import require_unit

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, to)
            member = await roles.find_member(session, phone, member_code)
            source = await lifecycle.transfer(session, member, target, svc.clock.now())
            return member, source, target

    member, source, target = _run(action)
    _say("cli/member_transferred", member=member, source=source, unit=target)


@member_app.command("deactivate")
def member_deactivate(phone: PhoneOption = None, member_code: CodeOption = None) -> None:
    """The member left the union: out of counts and reminders, roles ended, history kept."""
    from bot.services import lifecycle, roles

    async def action(svc):
        async with svc.db.session() as session:
            member = await roles.find_member(session, phone, member_code)
            ended = await lifecycle.deactivate(session, member, svc.clock.now())
        if ended:
            await _refresh_menus(svc, [member.id])
        return member, len(ended)

    member, ended = _run(action)
    _say("cli/member_deactivated", member=member, ended=ended)


@member_app.command("reactivate")
def member_reactivate(phone: PhoneOption = None, member_code: CodeOption = None) -> None:
    """The member is back in the union."""
    from bot.services import lifecycle, roles

    async def action(svc):
        async with svc.db.session() as session:
            member = await roles.find_member(session, phone, member_code)
            await lifecycle.reactivate(session, member, svc.clock.now())
            return member

    _say("cli/member_reactivated", member=_run(action))


async def _refresh_menus(svc, member_ids: list[int | None]) -> bool:
    """With a bot token, update the command menus of the people whose roles changed; without
    one (or offline) their menu follows at their next /start. Every command checks anyway."""
    ids = [member_id for member_id in member_ids if member_id is not None]
    token = svc.settings.telegram_bot_token
    if token is None or not ids:
        return False
    from telegram import Bot
    from telegram.error import TelegramError

    from handlers import menus

    try:
        async with Bot(token.get_secret_value(), base_url=svc.settings.bot_api_url) as bot:
            for member_id in ids:
                async with svc.db.session() as session:
                    await menus.refresh(bot, svc, session, member_id)
    except TelegramError:
        return False
    return True


@app.command("import-roster")
def import_roster(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=".xlsx or .csv roster")],
    unit: Annotated[str, typer.Option(help="Code of the unit the roster is for")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row and report; write nothing")
    ] = False,
) -> None:
    """Members from .xlsx or .csv: all rows or none; the same file again changes nothing."""
    from bot import rosterfile
    from bot.services import roster
    from bot.services.units import require_unit

    if not file.is_file():
        raise typer.BadParameter(f"{file}: no such file")
    try:
        rows, total = rosterfile.open_rows(file, file.name)
        with typer.progressbar(
            length=total or 1, label=file.name, file=sys.stderr, show_pos=True
        ) as bar:
            parsed = rosterfile.parse_rows(rows, bar.update)
    except rosterfile.BadFile as error:
        _say("cli/roster_bad_file", file=file.name, reason=error.reason, limit_mb=0)
        raise typer.Exit(1) from None

    async def action(svc):
        async with svc.db.session() as session:
            target = await require_unit(session, unit)
            planned = await roster.import_roster(
                session, target, parsed, svc.clock.now(), dry_run=dry_run
            )
            return planned, target

    planned, target = _run(action)
    if not planned.ok:
        _say("cli/roster_problems", plan=planned, unit=target)
        raise typer.Exit(1)
    _say("cli/roster_summary", plan=planned, unit=target)


@app.command("export-members")
def export_members(
    unit: Annotated[str, typer.Option(help="Code of the unit whose subtree is listed")],
    out: Annotated[Path, typer.Option(help="The .xlsx file to write")],
) -> None:
    """Every active member of a unit's subtree with their pledge status, as .xlsx."""
    from bot.documents.members_xlsx import labels_from, write_members
    from bot.services.exports import collect_member_rows
    from bot.services.units import require_unit

    async def action(svc):
        async with svc.db.reader() as session:
            target = await require_unit(session, unit)
            listing = await collect_member_rows(session, target, svc.clock.now(), svc.clock.tz)
        labels = labels_from(svc.renderer, svc.settings.locale)
        with out.open("wb") as stream:
            write_members(stream, listing, labels)
        return target, len(listing.rows)

    target, count = _run(action)
    _say("cli/members_exported", unit=target, count=count, out=str(out))


async def _bot_username(settings: Settings) -> str | None:
    """Ask Telegram for the bot's username when a token is set; offline there is none."""
    if settings.telegram_bot_token is None:
        return None
    from telegram import Bot

    async with Bot(
        settings.telegram_bot_token.get_secret_value(), base_url=settings.bot_api_url
    ) as bot:
        return bot.username


@content_app.command("check")
def content_check(directory: Annotated[Path | None, typer.Argument(metavar="DIR")] = None) -> None:
    """Validate campaigns, deadlines and templates; name the file and field of each error."""
    from bot.catalog import default_content_dir
    from bot.content_check import check_content

    problems = check_content(directory or default_content_dir())
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("ok")


@app.command("run")
def run(
    webhook: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Serve by webhook at this public https URL (default: long polling)",
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="Webhook mode: address to listen on (CHUYENDE_WEBHOOK_LISTEN)"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Webhook mode: port to listen on (CHUYENDE_WEBHOOK_PORT)"),
    ] = None,
) -> None:
    """Run the real bot (needs TELEGRAM_BOT_TOKEN): long polling, or --webhook URL."""
    from bot.app import build_application
    from bot.logs import setup_logging
    from bot.runtime import make_services

    settings = Settings()
    if settings.telegram_bot_token is None:
        _say("cli/token_missing")
        raise typer.Exit(2)
    if webhook is None:
        if listen is not None or port is not None:
            _say("cli/webhook_options_alone")
            raise typer.Exit(2)
        from bot.app import serve_polling

        setup_logging([settings.telegram_bot_token.get_secret_value()])
        asyncio.run(serve_polling(build_application(make_services(settings))))
        return
    _check_webhook(settings, webhook)
    from telegram.error import TelegramError

    from bot.webhook import serve_webhook

    assert settings.webhook_secret is not None
    setup_logging(
        [settings.telegram_bot_token.get_secret_value(), settings.webhook_secret.get_secret_value()]
    )
    application = build_application(make_services(settings))
    host = listen or settings.webhook_listen
    listen_port = settings.webhook_port if port is None else port
    try:
        asyncio.run(serve_webhook(application, webhook, host, listen_port))
    except (TelegramError, OSError) as error:  # Telegram refused setWebhook, port taken...
        logging.getLogger("bot.cli").error("webhook mode could not start: %s", error)
        raise typer.Exit(1) from None


def _check_webhook(settings: Settings, url: str) -> None:
    """Refuse, before anything starts, what Telegram would refuse or what cannot be served."""
    import re
    from urllib.parse import urlsplit

    from bot.webhook import RESERVED_PATHS

    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not secret:
        _say("cli/webhook_secret_missing")
        raise typer.Exit(2)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
        _say("cli/webhook_secret_invalid")
        raise typer.Exit(2)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or (parts.path or "/") in RESERVED_PATHS:
        _say("cli/webhook_url_invalid", url=url)
        raise typer.Exit(2)


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option(help="Port of the web chat page")] = 8080,
    now: Annotated[
        datetime,
        typer.Option(
            help="Where the bot's clock starts, local time",
            formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        ),
    ] = datetime(2024, 4, 5, 8, 0),
    database: Annotated[Path, typer.Option(help="SQLite file, made fresh")] = Path(
        "chuyende-demo.db"
    ),
) -> None:
    """Offline sandbox: Bot API emulator, web chat page and a seeded demo union. No token."""
    from bot.demo import run_demo

    try:
        asyncio.run(run_demo(port=port, now=now, database=database))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    app()
