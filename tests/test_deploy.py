"""The deployment files agree with the code: settings they set exist, commands they run parse.

Docker itself cannot run here (no daemon, no image registry), so these check what can drift:
an environment name renamed in the settings, a CLI flag renamed, a path the proxy forwards
that the bot does not serve, a unit file systemd would refuse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def setting_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update(getattr(alias, "choices", []) or ([alias] if alias else []))
    return {name for name in names if isinstance(name, str) and name.isupper()}


def test_every_variable_the_compose_file_sets_is_a_setting_of_the_bot():
    env = COMPOSE["services"]["bot"]["environment"]
    assert set(env) <= setting_names(), set(env) - setting_names()
    assert COMPOSE["services"]["migrate"]["environment"] == env


def test_three_replicas_on_postgresql_with_a_shared_send_budget_after_the_migration():
    bot = COMPOSE["services"]["bot"]
    assert bot["deploy"]["replicas"] == 3
    assert bot["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert bot["environment"]["CHUYENDE_RATE_BACKEND"] in {"redis", "postgres"}
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert COMPOSE["services"]["migrate"]["command"] == ["db", "upgrade"]


def test_the_commands_the_deployment_runs_are_accepted_by_the_cli():
    runner = CliRunner()
    bot_command = COMPOSE["services"]["bot"]["command"]
    assert bot_command[:2] == ["run", "--webhook"]
    assert "--webhook" in runner.invoke(app, ["run", "--help"]).output
    assert runner.invoke(app, ["db", "upgrade", "--help"]).exit_code == 0


def test_the_proxy_forwards_the_path_the_bot_serves_and_nothing_else():
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    webhook_path = urlparse(COMPOSE["services"]["bot"]["command"][2]).path
    assert re.search(rf"handle {re.escape(webhook_path)}\s*{{", caddyfile)
    assert "/metrics" not in caddyfile.replace("#", "\n#").split("handle")[1]
    port = str(COMPOSE["services"]["bot"]["expose"][0])
    assert f"dynamic a bot {port}" in caddyfile


def test_the_image_copies_what_exists_and_sets_known_settings():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / source).exists(), source
    env_block = re.search(r"^ENV CHUYENDE_CONTENT_DIR.*?(?=\n\n)", dockerfile, re.S | re.M)
    assert env_block is not None
    names = set(re.findall(r"([A-Z_]+)=", env_block.group(0)))
    assert names - {"CHUYENDE_CONTENT_DIR"} <= setting_names()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path):
    unit = (ROOT / "deploy" / "chuyende.service").read_text()
    # Point it at this checkout's interpreter so systemd can check the executables exist.
    venv_bin = str(Path(sys.executable).parent)
    unit = unit.replace("/opt/chuyende/.venv/bin", venv_bin)
    path = tmp_path / "chuyende.service"
    path.write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
