"""Several real bot processes (`chuyende run --webhook`) on one database, for scale-out tests.

The emulator stands where Telegram and the load balancer stand: it delivers updates by
webhook round-robin across the processes and redelivers what did not get a 200 to the next
one. Everything between is the real bot: its own OS processes, its own connection pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

WEBHOOK_URL = "https://bot.test/telegram"
WEBHOOK_SECRET = "multiproc-test-secret"
ROOT = Path(__file__).resolve().parent.parent

STEP = re.compile(r"Phần (\d+)/(\d+)")
REVIEW_MARK = "Xem lại bản đăng ký"
SUBMITTED_MARK = "Đã nhận bản đăng ký"
REVISED_MARK = "Đã lưu bản sửa"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BotProcess:
    index: int
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class BotFleet:
    """N bot processes serving one webhook path, started and stopped together."""

    emulator: object
    database_url: str
    now: str
    tmp: Path
    count: int = 3
    env_extra: dict[str, str] = field(default_factory=dict)
    processes: list[BotProcess] = field(default_factory=list)

    def _env(self, process: BotProcess) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUYENDE_")}
        env.update(
            TELEGRAM_BOT_TOKEN=self.emulator.token,
            TELEGRAM_API_BASE_URL=self.emulator.base_url,
            DATABASE_URL=self.database_url,
            CHUYENDE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            CHUYENDE_NOW=self.now,
            CHUYENDE_BACKGROUND="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env_extra)
        return env

    def start_one(self, process: BotProcess) -> None:
        log = process.log_path.open("ab")
        process.process = subprocess.Popen(
            [
                sys.executable, "-m", "bot.cli", "run", "--webhook", WEBHOOK_URL,
                "--listen", "127.0.0.1", "--port", str(process.port),
            ],
            cwd=ROOT,
            env=self._env(process),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    async def start(self) -> None:
        for index in range(self.count):
            process = BotProcess(index, free_port(), self.tmp / f"bot-{index}.log")
            self.processes.append(process)
            self.start_one(process)
        self.emulator.route_webhook([p.url + "/telegram" for p in self.processes])
        await asyncio.gather(*(self.wait_healthy(p) for p in self.processes))

    async def wait_healthy(self, process: BotProcess, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if not process.alive:
                    raise AssertionError(f"bot {process.index} exited:\n{process.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(process.url + "/healthz", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise AssertionError(f"bot {process.index} never became healthy:\n{process.log()}")

    async def metrics(self, process: BotProcess) -> dict[str, float]:
        """The process's /metrics as {'name{labels}': value}."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(process.url + "/metrics", timeout=5)).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def kill(self, process: BotProcess) -> None:
        """kill -9: no shutdown code runs, as when a machine loses power."""
        assert process.process is not None
        process.process.send_signal(signal.SIGKILL)
        process.process.wait(timeout=10)

    async def stop(self) -> None:
        for process in self.processes:
            if process.alive:
                process.process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process.process is not None:
                try:
                    await asyncio.to_thread(process.process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.process.kill()
                    process.process.wait()

    def logs(self) -> str:
        return "\n".join(f"--- bot {p.index} ---\n{p.log()[-4000:]}" for p in self.processes)


async def file_pledge(user, answers: list[str], submit_label: str, wait: float = 30.0) -> int:
    """Run the wizard as a person would, reading each screen; returns how often they retried.

    A person who gets no answer (the process holding their message died after saving it)
    types /pledge again, waits until the bot has said everything, and goes on from the
    latest screen: the wizard reopens at the saved step. Acting on the latest screen only
    matters because a slow reply may still arrive after the retry; a person would not type
    the same section twice.
    """
    retries = 0
    await user.send("/pledge")
    for _ in range(len(answers) * 4 + 8):
        try:
            screen = await _next_screen(user, wait)
        except TimeoutError:
            retries += 1
            await user.send("/pledge")
            screen = await _latest_screen_when_quiet(user, wait)
            if screen is None:
                continue
        if SUBMITTED_MARK in screen.text or REVISED_MARK in screen.text:
            return retries
        if REVIEW_MARK in screen.text:
            await user.press(submit_label, message=screen)
            continue
        step = STEP.search(screen.text)
        if step is not None:
            await user.send(answers[int(step.group(1)) - 1])
    raise AssertionError(f"{user!r} never got their pledge submitted:\n{user.transcript_text()}")


def _is_screen(text: str) -> bool:
    return bool(STEP.search(text)) or any(
        mark in text for mark in (REVIEW_MARK, SUBMITTED_MARK, REVISED_MARK)
    )


async def _latest_screen_when_quiet(user, wait: float, quiet: float = 2.0):
    """Every reply until the bot has been quiet for `quiet` seconds; the last screen of them."""
    latest = None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            message = await user.next_reply(timeout=quiet)
        except AssertionError:
            if latest is not None:
                return latest
            continue
        if _is_screen(message.text or ""):
            latest = message
    return latest


async def _next_screen(user, wait: float):
    """The next bot message that is a wizard screen (step, review, or the confirmation)."""
    deadline = time.monotonic() + wait
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            message = await user.next_reply(timeout=remaining)
        except AssertionError as timeout:
            raise TimeoutError from timeout
        if _is_screen(message.text or ""):
            return message
