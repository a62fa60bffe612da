"""Shared parts of the load benchmarks (deadline_day.py, memory.py).

- ``build``: a database of joined members, bulk loaded through the driver (select_due.py's
  ``Plan``/``Rows``, plus the stored counts computed in SQL as migration 0003 does);
- ``LoadEmulator``: the project's Bot API emulator with a wake-up per chat, so thousands of
  waiting members do not all wake on every message the bot sends;
- ``Member`` / ``run_members``: emulated members running the real pledge wizard over HTTP,
  each waiting for the bot's whole reply before the next message (a closed loop);
- ``BotProcess``: ``chuyende run`` in a process of its own, with VmRSS/VmHWM sampling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

os.environ.setdefault("PTB_TIMEDELTA", "true")

import select_due  # noqa: E402  (the bulk data generator the benchmarks share)
from summary_scale import TALLY_SQL  # noqa: E402

from bot.channels.emulator import BotApiEmulator  # noqa: E402

TOKEN = "123456789:BENCH-token-for-the-emulator-only"
USER_BASE = 5_000_000_000  # select_due.Rows: member i (0-based) has Telegram id USER_BASE + i
PG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
ERROR_TEXT = (ROOT / "content/templates/vi/common/error.html").read_text("utf-8").strip()[:40]

ANSWERS = (
    "Đọc kỹ chuyên đề, làm theo lời Bác về thực hành dân chủ.",
    "Sống giản dị, trung thực, đoàn kết với đồng nghiệp.",
    "Lắng nghe ý kiến người lao động trước khi quyết định.",
    "Công khai kế hoạch công tác; giảm giấy tờ không cần thiết.",
)
ON_TIME = ("đúng hạn", "on time")
FIXED_LAST = "Công khai kế hoạch công tác hằng tháng; bỏ giấy tờ không cần thiết."


# -- the data -------------------------------------------------------------------------------


def plan(members: int, units: int, *, all_joined: bool) -> select_due.Plan:
    """select_due's data shape; ``all_joined`` makes every member an active member on the
    bot with no pledge yet (the deadline-day crowd), otherwise the province mix (80% on the
    bot, 45% pledged, ...)."""
    p = select_due.Plan(members, units)
    if all_joined:
        for i in range(members):
            p.flags[i] = select_due.IDENTITY
    return p


def drivers(p: select_due.Plan, count: int) -> list[int]:
    """Telegram ids of ``count`` members who can run the wizard from scratch: active, on the
    bot, not blocked, no pledge or draft, not muted."""
    bad = (
        select_due.BLOCKED
        | select_due.SUBMITTED
        | select_due.DRAFT
        | select_due.INACTIVE
        | select_due.MUTED
    )
    ids = [USER_BASE + i for i, f in enumerate(p.flags) if f & select_due.IDENTITY and not f & bad]
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} members can run the wizard, {count} asked")
    return ids[:count]


def _tables(rows: select_due.Rows):
    return (
        ("member", rows.MEMBER_COLS, rows.members),
        ("chatidentity", rows.IDENTITY_COLS, rows.identities),
        ("pledge", rows.PLEDGE_COLS, rows.pledges),
        ("reminderlog", rows.LOG_COLS, rows.logs),
    )


def build_sqlite(url: str, p: select_due.Plan) -> float:
    from bot.migrate import upgrade

    t = time.perf_counter()
    path = url.split(":///", 1)[1]
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    upgrade(url)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-200000")
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO unit (id, code, name, level, parent_id, path, depth) VALUES (?,?,?,?,?,?,?)",
        p.unit_rows,
    )
    con.execute("COMMIT")
    campaign_id, deadline_id = asyncio.run(select_due._apply_campaign(url))
    rows = select_due.Rows(p, sqlite=True, deadline_id=deadline_id, campaign_id=campaign_id)
    con.execute("BEGIN")
    for table, cols, source in _tables(rows):
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        con.executemany(sql, source())
    for sql in TALLY_SQL:
        con.execute(sql)
    con.execute("COMMIT")
    con.execute("ANALYZE")  # what the scheduler does at start-up anyway
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t


def build_postgresql(url: str, p: select_due.Plan) -> float:
    from sqlalchemy.engine import make_url

    from bot.migrate import upgrade

    name = make_url(url).database
    assert name and name.startswith("bench_load"), name
    t = time.perf_counter()

    async def recreate() -> None:
        import asyncpg

        u = make_url(url)
        con = await asyncpg.connect(
            host=u.host, port=u.port or 5432, user=u.username, database="postgres", timeout=5
        )
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()

    asyncio.run(recreate())
    upgrade(url)

    async def load_units() -> None:
        con = await select_due._pg_connect(url)
        try:
            await con.copy_records_to_table(
                "unit",
                records=p.unit_rows,
                columns=["id", "code", "name", "level", "parent_id", "path", "depth"],
            )
            await con.execute("SELECT setval('unit_id_seq', (SELECT max(id) FROM unit))")
        finally:
            await con.close()

    asyncio.run(load_units())
    campaign_id, deadline_id = asyncio.run(select_due._apply_campaign(url))
    rows = select_due.Rows(p, sqlite=False, deadline_id=deadline_id, campaign_id=campaign_id)

    async def load_rest() -> None:
        con = await select_due._pg_connect(url)
        try:
            for table, cols, source in _tables(rows):
                for chunk in select_due._chunks(source(), 100_000):
                    await con.copy_records_to_table(table, records=chunk, columns=list(cols))
                await con.execute(
                    f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 1) FROM {table}))"
                )
            for sql in TALLY_SQL:
                await con.execute(sql)
            await con.execute("VACUUM ANALYZE")
        finally:
            await con.close()

    asyncio.run(load_rest())
    return time.perf_counter() - t


def build(kind: str, url: str, p: select_due.Plan) -> float:
    return (build_sqlite if kind == "sqlite" else build_postgresql)(url, p)


async def pledge_counts(url: str) -> Counter[str]:
    """Pledges by status, straight from the database."""
    from sqlalchemy import func, select

    from bot.db import Database
    from bot.models import Pledge

    db = Database(url)
    try:
        async with db.reader() as session:
            rows = await session.exec(select(Pledge.status, func.count()).group_by(Pledge.status))
            return Counter({str(getattr(s, "value", s)): n for s, n in rows.all()})
    finally:
        await db.dispose()


async def submitted_by(url: str, user_ids: list[int]) -> int:
    """How many of these members (by Telegram id) have a submitted pledge with a version."""
    from sqlalchemy import text

    from bot.db import Database

    db = Database(url)
    ids = [str(u) for u in user_ids]
    found = 0
    try:
        async with db.reader() as session:
            for start in range(0, len(ids), 5000):
                chunk = ids[start : start + 5000]
                marks = ", ".join(f":u{i}" for i in range(len(chunk)))
                sql = text(
                    "SELECT count(DISTINCT p.id) FROM pledge p "
                    "JOIN chatidentity c ON c.member_id = p.member_id "
                    "JOIN pledgeversion v ON v.pledge_id = p.id "
                    "AND v.version = p.current_version "
                    f"WHERE p.status = 'submitted' AND c.external_user_id IN ({marks})"
                )
                result = await session.execute(sql, {f"u{i}": u for i, u in enumerate(chunk)})
                found += result.scalar_one()
        return found
    finally:
        await db.dispose()


# -- the emulator -----------------------------------------------------------------------------


class LoadEmulator(BotApiEmulator):
    """The project's emulator, plus one asyncio.Event per chat set on each new event in it.

    The stock ``next_reply`` waits on one emulator-wide event: with hundreds of members
    waiting, every message the bot sends would wake all of them to re-check their chat,
    and the emulator's process (not the bot) would become what the benchmark measures.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chat_events: dict[int, asyncio.Event] = {}

    def _add_event(self, chat, kind, message=None, **extra):  # type: ignore[no-untyped-def]
        super()._add_event(chat, kind, message, **extra)
        waiter = self.chat_events.get(chat.id)
        if waiter is not None:
            waiter.set()


# -- members ----------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the members saw. Latencies: (monotonic time sent, seconds to the whole reply)."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    finished: int = 0  # members who got through their whole script
    updates: int = 0
    stray: int = 0  # bot messages nobody's step asked for (extra or unsolicited)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{kind}: {detail[:300]}")


class StepFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


Check = Callable[[list[Any]], str | None]  # the reply's messages -> None if right, else why


def _contains(*needles: str | tuple[str, ...]) -> Check:
    """The last message has each needle (a tuple: one of its alternatives, e.g. vi and en:
    one member in twenty picked English)."""

    def check(messages: list[Any]) -> str | None:
        text = messages[-1].text
        missing = [
            n
            for n in needles
            if not any(alt in text for alt in (n if isinstance(n, tuple) else (n,)))
        ]
        return f"{missing} not in {text[:120]!r}" if missing else None

    return check


def _has_button(prefix: str) -> Check:
    def check(messages: list[Any]) -> str | None:
        data = [b.get("callback_data", "") for row in messages[-1].inline_keyboard for b in row]
        return None if any(d.startswith(prefix) for d in data) else f"no {prefix} button: {data}"

    return check


@dataclass(frozen=True)
class Step:
    """One member action and the bot's whole reply to it (messages and edits, in order)."""

    kind: str  # text | button
    value: str  # the text, or the callback_data prefix of the button to press
    replies: int
    check: Check | None = None


def wizard_script(topic_replies: int) -> list[Step]:
    """The member's deadline-day conversation: read the topic, file the pledge section by
    section, go back from the review to fix the last section, submit, check it. 10 updates."""
    steps = [Step("text", "/topic", topic_replies), Step("text", "/pledge", 2, _contains("1/4"))]
    for k, answer in enumerate(ANSWERS):
        check = _contains(f"{k + 2}/4") if k < 3 else _has_button("pl:submit:")
        steps.append(Step("text", answer, 1, check))  # "saved" and the next step, one message
    steps += [
        Step("button", "pl:back:", 1, _contains("4/4", ANSWERS[3])),
        Step("text", FIXED_LAST, 1, _has_button("pl:submit:")),
        Step("button", "pl:submit:", 1, _contains(ON_TIME)),
        Step("text", "/mypledge", 1, _contains(ON_TIME, FIXED_LAST)),
    ]
    return steps


def topic_script(count: int) -> list[Step]:
    """A member reading the topic ``count`` times (the memory bench's read-only mix)."""
    return [Step("text", "/topic", 1) for _ in range(count)]


class Member:
    """One emulated member; ``run`` plays a script, waiting for each whole reply."""

    def __init__(self, emu: LoadEmulator, user_id: int) -> None:
        self.emu = emu
        self.user = emu.user(user_id, "Đoàn viên", started=True)
        self.chat = emu._chats[user_id]
        self.wake = emu.chat_events.setdefault(user_id, asyncio.Event())
        self.cursor = len(self.chat.events)

    def _new(self) -> list[Any]:
        out = []
        for event in self.chat.events[self.cursor :]:
            if event.kind in ("message", "edit") and event.message and event.message.from_bot:
                out.append(event.message)
        return out

    async def _reply(self, count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self._new()
            if any(ERROR_TEXT in m.text for m in messages):
                raise StepFailed("error template", messages[-1].text)
            if len(messages) >= count:
                self.cursor = len(self.chat.events)
                return messages
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [m.text[:60] for m in messages]
                raise StepFailed("timeout", f"{len(messages)}/{count} replies: {got}")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), remaining)

    async def _act(self, step: Step) -> None:
        if step.kind == "text":
            await self.user.send(step.value)
            return
        for message in reversed(self.user.bot_messages):
            for row in message.inline_keyboard:
                for button in row:
                    if button.get("callback_data", "").startswith(step.value):
                        await self.user.press(
                            callback_data=button["callback_data"], message=message
                        )
                        return
        raise StepFailed("wrong reply", f"no button {step.value} to press")

    async def run(
        self,
        script: list[Step],
        stats: Stats,
        think: tuple[float, float],
        rng: random.Random,
        timeout: float,
        stop: asyncio.Event,
    ) -> None:
        for index, step in enumerate(script):
            if stop.is_set():
                return
            if index:
                await asyncio.sleep(rng.uniform(*think))
            extra = self._new()
            if extra:  # anything the bot said since the last whole reply
                stats.stray += len(extra)
                self.cursor = len(self.chat.events)
            sent = time.monotonic()
            try:
                await self._act(step)
                stats.updates += 1
                messages = await self._reply(step.replies, timeout)
                if step.check is not None and (why := step.check(messages)):
                    raise StepFailed("wrong reply", why)
            except StepFailed as failed:
                stats.error(failed.kind, f"step {index} ({step.value[:20]}): {failed}")
                return  # the member's conversation is off script; they give up
            stats.samples.append((sent, time.monotonic() - sent))
        stats.finished += 1


def run_wizard(emu: LoadEmulator, user_ids: list[int], args, *, seed: int, progress=None):
    """``run_members`` with the deadline-day conversation, paced by a benchmark's
    ``--concurrency``, ``--think-min/--think-max``, ``--timeout`` and ``--max-seconds``."""
    return run_members(
        emu,
        user_ids,
        wizard_script(topic_replies=1),
        concurrency=args.concurrency,
        think=(args.think_min, args.think_max),
        timeout=args.timeout,
        seed=seed,
        max_seconds=args.max_seconds,
        progress=progress,
    )


async def run_members(
    emu: LoadEmulator,
    user_ids: list[int],
    script: list[Step],
    *,
    concurrency: int,
    think: tuple[float, float],
    timeout: float,
    seed: int = 1,
    max_seconds: float | None = None,
    progress: Callable[[Stats, float], None] | None = None,
) -> tuple[Stats, float, bool]:
    """``concurrency`` members active at a time; when one finishes their script the next
    member in line starts (a closed loop: nobody writes again before the bot answered).
    Returns the stats, the wall time and whether every member ran (False: max_seconds hit)."""
    stats = Stats()
    queue = list(reversed(user_ids))
    stop = asyncio.Event()
    rng = random.Random(seed)

    async def lane(lane_no: int) -> None:
        # Lanes start spread over one think time, so the first messages do not come at once.
        await asyncio.sleep(rng.uniform(0, think[1]) if think[1] else 0)
        while queue and not stop.is_set():
            member = Member(emu, queue.pop())
            await member.run(script, stats, think, random.Random(rng.random()), timeout, stop)

    began = time.monotonic()

    async def watch() -> None:
        while True:
            await asyncio.sleep(10)
            elapsed = time.monotonic() - began
            if progress:
                progress(stats, elapsed)
            if max_seconds is not None and elapsed > max_seconds:
                stop.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(lane(i) for i in range(concurrency)))
    finally:
        watcher.cancel()
    return stats, time.monotonic() - began, not stop.is_set()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_line(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"p50 {percentile(ms, 50):.0f} ms, p95 {percentile(ms, 95):.0f} ms, "
        f"p99 {percentile(ms, 99):.0f} ms, max {max(ms, default=float('nan')):.0f} ms"
    )


# -- the bot process --------------------------------------------------------------------------


def bot_env(emu_url: str, database_url: str, now: datetime, rate: float, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHUYENDE_", "TELEGRAM_", "DATABASE_URL"))
    }
    env.update(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=emu_url,
        DATABASE_URL=database_url,
        CHUYENDE_NOW=now.isoformat(),
        CHUYENDE_LOCALE="vi",
        CHUYENDE_PER_BOT_RATE=str(rate),
        CHUYENDE_BACKGROUND="true",
        PTB_TIMEDELTA="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def chuyende_command() -> list[str]:
    return [sys.executable, "-m", "bot.cli"]


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except FileNotFoundError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BotProcess:
    """``chuyende run`` (or another command) in a process of its own, its log in a file.

    It runs in an empty working directory so no stray ``.env`` is read."""

    def __init__(self, args: list[str], env: dict, workdir: Path, name: str = "bot") -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            args, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 30) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(int(timeout * 10)):
                if not self.alive():
                    break
                await asyncio.sleep(0.1)
            if self.alive():
                self.proc.kill()
        self._log.close()
        return self.proc.wait()


async def wait_polling(emu: BotApiEmulator, bot: BotProcess, timeout: float = 120) -> float:
    """Until the bot made its second getUpdates call (it started and handled the first)."""
    began = time.monotonic()
    while emu.stats["getUpdates"] < 2:
        if not bot.alive():
            raise SystemExit(f"the bot process exited:\n{bot.log_tail()}")
        if time.monotonic() - began > timeout:
            raise SystemExit(f"the bot did not start polling in {timeout} s:\n{bot.log_tail()}")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


def utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
