"""The admin's command line, run as an admin would run it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.catalog import default_content_dir
from bot.cli import app

runner = CliRunner()


@pytest.fixture
def admin(tmp_path, monkeypatch):
    """`chuyende …` against a fresh, migrated SQLite file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}")
    monkeypatch.setenv("CHUYENDE_LOCALE", "en")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)

    def run(*args: str):
        return runner.invoke(app, list(args))

    assert run("db", "upgrade").exit_code == 0
    return run


def test_build_the_tree_apply_a_campaign_and_invite(admin):
    assert admin("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận").exit_code == 0
    assert admin("unit", "add", "PT", "LĐLĐ TP Phan Thiết", "--parent", "BT").exit_code == 0
    assert admin("unit", "add", "SCH", "CĐCS Trường THPT", "--parent", "PT").exit_code == 0
    listing = admin("unit", "list")
    assert listing.exit_code == 0
    assert listing.output.splitlines() == [
        "BT  LĐLĐ tỉnh Bình Thuận  [province]",
        "  PT  LĐLĐ TP Phan Thiết  [district]",
        "    SCH  CĐCS Trường THPT  [grassroots]",
    ]
    campaigns = admin("campaign", "list")
    assert "binh-thuan-2024" in campaigns.output and "2024" in campaigns.output
    applied = admin("campaign", "apply", "binh-thuan-2024", "--unit", "BT")
    assert applied.exit_code == 0, applied.output
    own = admin(
        "campaign", "apply", "binh-thuan-2024", "--unit", "SCH", "--deadline", "pledge=2024-04-12"
    )
    assert own.exit_code == 0, own.output
    made = admin("invite", "--unit", "SCH", "--bot-username", "chuyende_bot")
    assert made.exit_code == 0
    assert "https://t.me/chuyende_bot?start=" in made.output
    officer = admin("invite", "--unit", "SCH", "--role", "officer", "--uses", "1")
    assert "officer" in officer.output and "CHUYENDE_BOT_USERNAME" in officer.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("unit", "add", "X", "Y", "--parent", "NOPE"), 'No unit with code "NOPE"'),
        (("campaign", "apply", "nope-2030", "--unit", "BT"), 'No campaign "nope-2030"'),
        (
            (
                "campaign",
                "apply",
                "binh-thuan-2024",
                "--unit",
                "BT",
                "--deadline",
                "party=2024-01-01",
            ),
            'Unknown deadline "party"',
        ),
        (("invite", "--unit", "BT", "--uses", "0"), "at least 1"),
        (("unit", "add", "BT", "Again"), "already exists"),
    ],
)
def test_bad_admin_input_is_explained_and_changes_nothing(admin, args, message):
    assert admin("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận").exit_code == 0
    result = admin(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert admin("unit", "list").output.count("\n") == 1


def test_a_bad_deadline_date_is_a_usage_error(admin):
    admin("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận")
    result = admin(
        "campaign", "apply", "binh-thuan-2024", "--unit", "BT", "--deadline", "pledge=2024-02-30"
    )
    assert result.exit_code == 2
    assert "NAME=YYYY-MM-DD" in result.output


def test_content_check_passes_on_shipped_content_and_names_file_and_field(tmp_path):
    assert runner.invoke(app, ["content", "check"]).exit_code == 0
    broken = tmp_path / "content"
    shutil.copytree(default_content_dir(), broken)
    target = broken / "campaigns" / "binh-thuan-2024.yaml"
    target.write_text(target.read_text().replace("date: 2024-04-10", "date: 2024-02-30"))
    result = runner.invoke(app, ["content", "check", str(broken)])
    assert result.exit_code == 1
    assert "campaigns/binh-thuan-2024.yaml" in result.output
    assert "deadlines[1].date" in result.output


def test_run_without_a_token_says_how_to_get_one(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("CHUYENDE_LOCALE", "en")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2
    assert "BotFather" in result.output


def test_a_unit_sets_its_own_reminder_policy(admin, tmp_path):
    import asyncio

    from sqlmodel import select

    from bot.db import Database
    from bot.models import Campaign, Unit

    admin("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận")
    admin("unit", "add", "SCH", "CĐCS Trường THPT", "--parent", "BT")
    result = admin(
        "campaign",
        "apply",
        "binh-thuan-2024",
        "--unit",
        "SCH",
        "--reminder-offsets",
        "5,2,0",
        "--reminder-window",
        "08:00-19:00",
    )
    assert result.exit_code == 0, result.output

    async def policies():
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}")
        async with db.reader() as session:
            rows = (
                await session.exec(select(Campaign, Unit).where(Campaign.unit_id == Unit.id))
            ).all()
        await db.dispose()
        return {unit.code: campaign.reminder_policy for campaign, unit in rows}

    policy = asyncio.run(policies())["SCH"]
    assert policy["offsets_days"] == [5, 2, 0]
    assert policy["window"] == {"start": "08:00:00", "end": "19:00:00"} or policy["window"] == {
        "start": "08:00",
        "end": "19:00",
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--reminder-offsets", "3,3"), 1, "offsets_days"),
        (("--reminder-offsets", "-1"), 1, "offsets_days"),
        (("--reminder-window", "20:00-08:00"), 1, "window"),
        (("--reminder-window", "8h"), 2, "HH:MM-HH:MM"),
        (("--reminder-offsets", "a,b"), 2, "7,3,1,0"),
    ],
)
def test_a_bad_reminder_policy_is_refused(admin, args, code, message):
    admin("unit", "add", "BT", "LĐLĐ tỉnh Bình Thuận")
    result = admin("campaign", "apply", "binh-thuan-2024", "--unit", "BT", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
