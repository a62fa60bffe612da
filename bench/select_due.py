"""Benchmark: selecting who is due for a reminder, at province scale.

The issue's target: selecting who is due for 1,000,000 members in 5,000 units takes at most
2 s with at most 300 MB peak RSS, on SQLite and on PostgreSQL, materialising the due rows.

    python bench/select_due.py [--backend sqlite|postgresql|both] [--members 1000000]
                               [--units 5000] [--runs 5] [--variant NAME ...]

For each backend it builds a fresh database (schema from `bot.migrate.upgrade`, data bulk
loaded through the driver: sqlite3 `executemany`, asyncpg `copy_records_to_table`), applies
the Bình Thuận 2024 campaign at the province with the project's own `apply_campaign`, then
times, each in a fresh subprocess that only connects and selects (so its peak RSS, VmHWM, is
the selection's, not the generation's):

- `baseline`: `SELECT id FROM member`, all ids materialised through the same session;
- `project`: `bot.services.reminders.owing_members(..., limit=None)` for the pledge deadline,
  kind reminder, offsets [3], today 2024-04-06: `owing_members_query` executed through
  `Database.reader()` and turned into `Recipient` objects exactly as the service does;
- `batch`: the same with the service's default limit, what one scheduler tick asks for;
- any `--variant`: scratch copies of the query or of its execution, to test a proposed fix
  without touching the project (see VARIANTS below).

Runs alternate between the measured things so a noisy neighbour hits them alike; the
medians and their ratio to the baseline are printed, with a summary table at the end.
PostgreSQL is skipped with a message when it cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TODAY = date(2024, 4, 6)  # three days before the pledge's last day (9/4): offset 3 is due
OFFSETS = [3]
CATALOG_ID = "binh-thuan-2024"
DISTRICTS = 50
TARGET_SECONDS = 2.0
TARGET_RSS_MB = 300.0
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/chuyende_bench"
PG_ADMIN_DB = "test"

# Per-member facts, one bit each, decided once so every table agrees.
IDENTITY, BLOCKED, SUBMITTED, DRAFT, LOG7, LOG3, MUTED, MUTED_PAST, INACTIVE = (
    1 << n for n in range(9)
)

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi")
MIDDLE = ("Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quốc", "Thu", "Xuân")
GIVEN = ("An", "Bình", "Cường", "Dũng", "Đào", "Hà", "Hải", "Hạnh", "Hùng", "Hương", "Lan")
GIVEN += ("Linh", "Long", "Mai", "Nam", "Phương", "Quang", "Sơn", "Tâm", "Thảo", "Trang", "Yến")

ASOF = datetime(2024, 3, 20, 2, 0, tzinfo=UTC)  # when the bulk rows were "created"


# -- the data ---------------------------------------------------------------------------------


class Plan:
    """The shape of the data set: the unit tree and one flags byte per member."""

    def __init__(self, members: int, units: int, seed: int = 20240406) -> None:
        if units < DISTRICTS + 2:
            raise SystemExit(f"--units must be at least {DISTRICTS + 2}")
        self.members = members
        self.units = units
        rng = random.Random(seed)
        # 1 province (id 1) -> 50 districts (ids 2..51) -> the rest grassroots (ids 52..units).
        self.grassroots = list(range(DISTRICTS + 2, units + 1))
        rows: list[tuple] = [(1, "P1", "LĐLĐ tỉnh Bình Thuận", "province", None, "/1/", 0)]
        for d in range(2, DISTRICTS + 2):
            rows.append((d, f"D{d}", f"LĐLĐ huyện {d - 1}", "district", 1, f"/1/{d}/", 1))
        for g in self.grassroots:
            d = 2 + (g - DISTRICTS - 2) % DISTRICTS
            rows.append((g, f"G{g}", f"Công đoàn cơ sở {g}", "grassroots", d, f"/1/{d}/{g}/", 2))
        self.unit_rows = rows
        self.member_unit = array("i", (rng.choice(self.grassroots) for _ in range(members)))
        flags = array("H", bytes(2 * members))
        r = rng.random
        for i in range(members):
            f = 0
            if r() < 0.01:
                f |= INACTIVE
            x = r()
            if x < 0.03:
                f |= MUTED  # on leave past the benchmark day: no reminders
            elif x < 0.04:
                f |= MUTED_PAST  # was muted, no longer
            if r() < 0.80:
                f |= IDENTITY
                if r() < 0.03:
                    f |= BLOCKED
            x = r()
            if x < 0.45:
                f |= SUBMITTED
            elif x < 0.50:
                f |= DRAFT
            if f & IDENTITY:
                if not f & SUBMITTED and r() < 0.85:
                    f |= LOG7  # the offset-7 reminder went out on 2/4
                if r() < 0.125:
                    f |= LOG3  # 10% of all members already reminded at offset 3 today
            flags[i] = f
        self.flags = flags

    def expected_due(self) -> int:
        want, bad = IDENTITY, BLOCKED | SUBMITTED | LOG3 | MUTED | INACTIVE
        return sum(1 for f in self.flags if f & want and not f & bad)


def _name(i: int) -> str:
    h = (i * 2654435761) & 0xFFFFFFFF
    family, middle = FAMILY[h % len(FAMILY)], MIDDLE[(h >> 8) % len(MIDDLE)]
    return f"{family} {middle} {GIVEN[(h >> 16) % len(GIVEN)]}"


class Rows:
    """Row tuples for each bulk table, in column order, with values typed per backend."""

    def __init__(self, plan: Plan, sqlite: bool, deadline_id: int, campaign_id: int) -> None:
        from bot.text import search_key

        self.plan = plan
        self.sqlite = sqlite
        self.deadline_id = deadline_id
        self.campaign_id = campaign_id
        self._keys: dict[str, str] = {}
        self._search_key = search_key

    def _dt(self, value: datetime):
        # SQLAlchemy's SQLite DATETIME storage format; asyncpg takes the aware datetime.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else value

    def _d(self, value: date):
        return value.isoformat() if self.sqlite else value

    def _b(self, value: bool):
        return int(value) if self.sqlite else value

    MEMBER_COLS = (
        "id", "unit_id", "full_name", "name_key", "phone", "member_code", "position", "active",
        "reminders_muted_until", "created_at",
    )  # fmt: skip

    def members(self) -> Iterator[tuple]:
        created = self._dt(ASOF)
        muted, muted_past = self._d(date(2024, 4, 20)), self._d(date(2024, 3, 15))
        yes, no = self._b(True), self._b(False)
        keys, key = self._keys, self._search_key
        for i, (unit, f) in enumerate(zip(self.plan.member_unit, self.plan.flags, strict=True)):
            mid = i + 1
            name = _name(mid)
            name_key = keys.get(name)
            if name_key is None:
                name_key = keys[name] = key(name)
            until = muted if f & MUTED else muted_past if f & MUTED_PAST else None
            active = no if f & INACTIVE else yes
            yield (mid, unit, name, name_key, f"+849{mid:08d}", None, None, active, until, created)

    IDENTITY_COLS = (
        "id", "channel", "external_user_id", "chat_id", "member_id", "locale", "consent_at",
        "blocked_at", "created_at",
    )  # fmt: skip

    def identities(self) -> Iterator[tuple]:
        created = self._dt(ASOF)
        blocked = self._dt(datetime(2024, 4, 1, 3, 0, tzinfo=UTC))
        locales = ("vi",) * 18 + ("en", None)
        n = 0
        for i, f in enumerate(self.plan.flags):
            if f & IDENTITY:
                n += 1
                ext = str(5_000_000_000 + i)
                yield (
                    n, "telegram", ext, ext, i + 1, locales[i % 20], created,
                    blocked if f & BLOCKED else None, created,
                )  # fmt: skip

    PLEDGE_COLS = (
        "id", "member_id", "campaign_id", "status", "draft", "current_version",
        "first_submitted_at", "late", "updated_at",
    )  # fmt: skip

    def pledges(self) -> Iterator[tuple]:
        at = self._dt(datetime(2024, 4, 3, 2, 0, tzinfo=UTC))
        empty = "{}"
        no = self._b(False)
        n = 0
        for i, f in enumerate(self.plan.flags):
            if f & SUBMITTED:
                n += 1
                yield (n, i + 1, self.campaign_id, "submitted", empty, 1, at, no, at)
            elif f & DRAFT:
                n += 1
                yield (n, i + 1, self.campaign_id, "draft", empty, 0, None, no, at)

    LOG_COLS = (
        "id", "kind", "member_id", "deadline_id", "offset_days", "unit_id", "status",
        "outbox_id", "created_at",
    )  # fmt: skip

    def logs(self) -> Iterator[tuple]:
        day7 = self._dt(datetime(2024, 4, 2, 0, 30, tzinfo=UTC))
        day3 = self._dt(datetime(2024, 4, 6, 0, 30, tzinfo=UTC))
        n = 0
        for i, f in enumerate(self.plan.flags):
            if f & LOG7:
                n += 1
                yield (n, "reminder", i + 1, self.deadline_id, 7, 0, "queued", None, day7)
            if f & LOG3:
                n += 1
                yield (n, "reminder", i + 1, self.deadline_id, 3, 0, "queued", None, day3)


def _chunks(rows: Iterator[tuple], size: int = 50_000) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _apply_campaign(url: str) -> tuple[int, int]:
    """The project's own apply_campaign at the province; returns (campaign, pledge deadline)."""
    from sqlalchemy import select

    from bot.catalog import load_catalog
    from bot.db import Database
    from bot.models import Deadline, Unit
    from bot.services.campaigns import apply_campaign

    db = Database(url)
    try:
        async with db.session() as s:
            province = await s.get(Unit, 1)
            assert province is not None
            campaign = await apply_campaign(s, load_catalog(), CATALOG_ID, province, ASOF)
            deadline = (
                await s.exec(
                    select(Deadline).where(
                        Deadline.campaign_id == campaign.id, Deadline.name == "pledge"
                    )
                )
            ).scalar_one()
            return campaign.id, deadline.id
    finally:
        await db.dispose()


def _sqlite_file(url: str) -> str:
    return url.split(":///", 1)[1]


def build_sqlite(url: str, plan: Plan) -> dict[str, float]:
    from bot.migrate import upgrade

    path = _sqlite_file(url)
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    upgrade(url)
    times["schema"] = time.perf_counter() - t

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-200000")
    t = time.perf_counter()
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO unit (id, code, name, level, parent_id, path, depth) VALUES (?,?,?,?,?,?,?)",
        plan.unit_rows,
    )
    con.execute("COMMIT")
    times["units"] = time.perf_counter() - t

    t = time.perf_counter()
    campaign_id, deadline_id = asyncio.run(_apply_campaign(url))
    times["campaign"] = time.perf_counter() - t

    rows = Rows(plan, sqlite=True, deadline_id=deadline_id, campaign_id=campaign_id)
    for table, cols, source in (
        ("member", rows.MEMBER_COLS, rows.members),
        ("chatidentity", rows.IDENTITY_COLS, rows.identities),
        ("pledge", rows.PLEDGE_COLS, rows.pledges),
        ("reminderlog", rows.LOG_COLS, rows.logs),
    ):
        t = time.perf_counter()
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        con.execute("BEGIN")
        con.executemany(sql, source())
        con.execute("COMMIT")
        times[table] = time.perf_counter() - t
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return times


async def _pg_admin(url: str):
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password,
        database=PG_ADMIN_DB, timeout=5,
    )  # fmt: skip


async def _pg_connect(url: str):
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password,
        database=u.database, timeout=5,
    )  # fmt: skip


def pg_reachable(url: str) -> str | None:
    async def probe():
        con = await _pg_admin(url)
        await con.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # any failure to connect means: skip PostgreSQL
        return f"{type(exc).__name__}: {exc}"
    return None


def build_postgresql(url: str, plan: Plan) -> dict[str, float]:
    from sqlalchemy.engine import make_url

    from bot.migrate import upgrade

    name = make_url(url).database
    assert name and name.replace("_", "").isalnum(), name

    async def recreate():
        con = await _pg_admin(url)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()

    times: dict[str, float] = {}
    t = time.perf_counter()
    asyncio.run(recreate())
    upgrade(url)
    times["schema"] = time.perf_counter() - t

    async def load_units():
        con = await _pg_connect(url)
        try:
            await con.copy_records_to_table(
                "unit",
                records=plan.unit_rows,
                columns=["id", "code", "name", "level", "parent_id", "path", "depth"],
            )
            await con.execute("SELECT setval('unit_id_seq', (SELECT max(id) FROM unit))")
        finally:
            await con.close()

    t = time.perf_counter()
    asyncio.run(load_units())
    times["units"] = time.perf_counter() - t

    t = time.perf_counter()
    campaign_id, deadline_id = asyncio.run(_apply_campaign(url))
    times["campaign"] = time.perf_counter() - t

    rows = Rows(plan, sqlite=False, deadline_id=deadline_id, campaign_id=campaign_id)

    async def load_rest():
        con = await _pg_connect(url)
        try:
            for table, cols, source in (
                ("member", rows.MEMBER_COLS, rows.members),
                ("chatidentity", rows.IDENTITY_COLS, rows.identities),
                ("pledge", rows.PLEDGE_COLS, rows.pledges),
                ("reminderlog", rows.LOG_COLS, rows.logs),
            ):
                t = time.perf_counter()
                for chunk in _chunks(source(), 100_000):
                    await con.copy_records_to_table(table, records=chunk, columns=list(cols))
                await con.execute(
                    f"SELECT setval('{table}_id_seq', (SELECT coalesce(max(id), 1) FROM {table}))"
                )
                times[table] = time.perf_counter() - t
            # What autovacuum does shortly after a bulk load (PostgreSQL 13+ vacuums after
            # inserts too): statistics for the planner, the visibility map for index-only scans.
            t = time.perf_counter()
            await con.execute("VACUUM ANALYZE")
            times["vacuum analyze"] = time.perf_counter() - t
        finally:
            await con.close()

    asyncio.run(load_rest())
    return times


# -- the measured code --------------------------------------------------------------------


async def _context(session):
    """The campaign, its scope and the pledge deadline, found as plan() finds them."""
    from sqlalchemy import select

    from bot.models import Campaign, Deadline
    from bot.services.reminders import scope

    campaign = (await session.exec(select(Campaign))).scalars().one()
    unit, excluded = await scope(session, campaign)
    deadline = (
        (
            await session.exec(
                select(Deadline).where(
                    Deadline.campaign_id == campaign.id, Deadline.name == "pledge"
                )
            )
        )
        .scalars()
        .one()
    )
    return unit, excluded, deadline


async def v_baseline(session, unit, excluded, deadline):
    """Reading the rows at all: every member id, through the same session and driver."""
    from sqlalchemy import select

    from bot.models import Member

    return [row[0] for row in (await session.exec(select(Member.id))).all()]


async def v_project(session, unit, excluded, deadline):
    """The service itself: owing_members(..., limit=None)."""
    from bot.models import NoticeKind
    from bot.services.reminders import owing_members

    return await owing_members(
        session, unit, excluded, deadline, NoticeKind.reminder, OFFSETS, TODAY, limit=None
    )


async def v_unordered(session, unit, excluded, deadline):
    """Scratch copy: the same query without ORDER BY member.id."""
    from bot.models import NoticeKind
    from bot.services.reminders import Recipient, owing_members_query

    query = owing_members_query(unit, excluded, deadline, NoticeKind.reminder, OFFSETS, TODAY)
    rows = await session.exec(query.order_by(None))
    return [Recipient(*row) for row in rows.all()]


async def v_raw_driver(session, unit, excluded, deadline):
    """The project's SQL run on the bare DBAPI cursor: what the engine and driver cost alone."""
    from bot.models import NoticeKind
    from bot.services.reminders import Recipient, owing_members_query

    query = owing_members_query(unit, excluded, deadline, NoticeKind.reminder, OFFSETS, TODAY)
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    dialect = conn.dialect
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    if dialect.name == "sqlite":
        params = [compiled.params[name] for name in compiled.positiontup]
        params = [p.value if hasattr(p, "value") else p for p in params]
        params = [p.isoformat() if isinstance(p, date) else p for p in params]
        cursor = await raw.driver_connection.execute(str(compiled), params)
        rows = await cursor.fetchall()
    else:
        sql = str(compiled).replace("::VARCHAR", "").replace("::INTEGER", "")
        params = [compiled.params[name] for name in compiled.positiontup]
        params = [p.value if hasattr(p, "value") else p for p in params]
        rows = await raw.driver_connection.fetch(sql, *params)
    return [Recipient(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class SlimRecipient:
    """Scratch copy of bot.services.reminders.Recipient with __slots__: no per-object dict."""

    member_id: int
    identity_id: int
    chat_id: str
    locale: str | None
    full_name: str


def _query(unit, excluded, deadline):
    from bot.models import NoticeKind
    from bot.services.reminders import owing_members_query

    return owing_members_query(unit, excluded, deadline, NoticeKind.reminder, OFFSETS, TODAY)


async def v_core(session, unit, excluded, deadline):
    """Same query, executed on the session's Connection (Core) instead of the ORM session."""
    from bot.services.reminders import Recipient

    conn = await session.connection()
    rows = await conn.execute(_query(unit, excluded, deadline))
    return [Recipient(*row) for row in rows.all()]


async def v_slots(session, unit, excluded, deadline):
    """Same query and execution as the service, into a slotted Recipient."""
    rows = await session.exec(_query(unit, excluded, deadline))
    return [SlimRecipient(*row) for row in rows.all()]


async def v_core_slots(session, unit, excluded, deadline):
    """Both: Core execution and a slotted Recipient (the proposed change)."""
    conn = await session.connection()
    rows = await conn.execute(_query(unit, excluded, deadline))
    return [SlimRecipient(*row) for row in rows.all()]


async def v_batch(session, unit, excluded, deadline):
    """What one scheduler tick asks for: owing_members(...) with its default limit (BATCH)."""
    from bot.models import NoticeKind
    from bot.services.reminders import owing_members

    return await owing_members(
        session, unit, excluded, deadline, NoticeKind.reminder, OFFSETS, TODAY
    )


async def v_stream(session, unit, excluded, deadline):
    """Proposed for the full selection: Core, streamed in partitions, into slotted Recipients,
    so the driver's rows, SQLAlchemy's rows and the Recipients never all exist at once."""
    conn = await session.connection()
    query = _query(unit, excluded, deadline).execution_options(yield_per=STREAM_CHUNK)
    result = await conn.stream(query)
    out: list[SlimRecipient] = []
    async for part in result.partitions():
        out.extend(SlimRecipient(*row) for row in part)
    return out


async def v_no_gc(session, unit, excluded, deadline):
    """The service itself, with the cyclic garbage collector paused while it materialises."""
    import gc

    gc.disable()
    try:
        return await v_project(session, unit, excluded, deadline)
    finally:
        gc.enable()


async def v_no_gc_slots(session, unit, excluded, deadline):
    """`slots` with the cyclic garbage collector paused: no streaming."""
    import gc

    gc.disable()
    try:
        return await v_slots(session, unit, excluded, deadline)
    finally:
        gc.enable()


async def v_proposed(session, unit, excluded, deadline):
    """The proposed shape: `stream` (Core, partitions, slotted Recipient) with the cyclic
    garbage collector paused while the rows are turned into objects."""
    import gc

    gc.disable()
    try:
        return await v_stream(session, unit, excluded, deadline)
    finally:
        gc.enable()


async def _sqlite_stats(session) -> None:
    """SQLite: ANALYZE inside the reader's transaction, rolled back when the session closes,
    so the planner sees statistics for this run only. PostgreSQL: already analysed."""
    from sqlalchemy import text

    if session.bind.dialect.name == "sqlite":
        await session.exec(text("ANALYZE"))


async def _pg_no_jit(session) -> None:
    """PostgreSQL: no JIT compilation for this transaction (SQLite: nothing to do)."""
    from sqlalchemy import text

    if session.bind.dialect.name == "postgresql":
        await session.exec(text("SET LOCAL jit = off"))


async def _pg_serial(session) -> None:
    """PostgreSQL: no parallel workers for this transaction (SQLite: nothing to do)."""
    from sqlalchemy import text

    if session.bind.dialect.name == "postgresql":
        await session.exec(text("SET LOCAL max_parallel_workers_per_gather = 0"))


VARIANTS = {
    "baseline": v_baseline,
    "project": v_project,
    "batch": v_batch,
    "stats": v_project,
    "stats-batch": v_batch,
    "no-jit": v_project,
    "serial": v_project,
    "unordered": v_unordered,
    "core": v_core,
    "slots": v_slots,
    "core-slots": v_core_slots,
    "stream": v_stream,
    "no-gc": v_no_gc,
    "no-gc-slots": v_no_gc_slots,
    "proposed": v_proposed,
    "raw-driver": v_raw_driver,
}
ALWAYS = ("baseline", "project", "batch")  # timed on every run; the others with --variant
# Done before the clock starts: what a variant assumes about the database or connection.
PREPARE = {
    "stats": _sqlite_stats,
    "stats-batch": _sqlite_stats,
    "no-jit": _pg_no_jit,
    "serial": _pg_serial,
}
STREAM_CHUNK = int(os.environ.get("BENCH_STREAM_CHUNK", "10000"))


def _status_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_rss_kb() -> int:
    """The peak RSS of this process image (VmHWM).

    Not ru_maxrss: Linux carries that over from the forked parent across exec, so a child
    of the process that generated the data would report the generator's peak.
    """
    return _status_kb("VmHWM")


async def _child(url: str, variant: str) -> dict:
    from sqlalchemy import text

    from bot.db import Database

    db = Database(url)
    try:
        async with db.reader() as session:
            await session.exec(text("SELECT 1"))  # connected: only the selection is timed
            unit, excluded, deadline = await _context(session)
            if variant in PREPARE:
                await PREPARE[variant](session)
            rss_before = _status_kb("VmRSS")
            t = time.perf_counter()
            result = await VARIANTS[variant](session, unit, excluded, deadline)
            seconds = time.perf_counter() - t
            rows = len(result)
            sample = repr(result[0]) if result else None
    finally:
        await db.dispose()
    maxrss = _peak_rss_kb()
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "variant": variant,
        "seconds": seconds,
        "rows": rows,
        "rss_before_mb": rss_before / 1024,
        "maxrss_mb": maxrss / 1024,
        "ru_maxrss_mb": ru_maxrss / 1024,
        "sample": sample,
    }


def run_child(url: str, variant: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--url", url],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {variant} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- query plans ----------------------------------------------------------------------------


def _project_sql(deadline_id: int, campaign_id: int, dialect_name: str, limit=None) -> str:
    """The project's query with its values inlined, for EXPLAIN."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    from bot.models import Deadline, NoticeKind, Unit
    from bot.services.reminders import owing_members_query

    unit = Unit(id=1, code="P1", name="", level="province", path="/1/", depth=0)
    deadline = Deadline(id=deadline_id, campaign_id=campaign_id, name="pledge")
    query = owing_members_query(unit, [], deadline, NoticeKind.reminder, OFFSETS, TODAY)
    if limit is not None:
        query = query.limit(limit)
    dialect = sqlite.dialect() if dialect_name == "sqlite" else PGDialect_asyncpg()
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def explain(url: str, backend: str, deadline_id: int, campaign_id: int) -> str:
    """Plans of the full selection and of one tick's batch (LIMIT BATCH), with timings."""
    from bot.services.reminders import BATCH

    queries = [
        ("all due rows (limit=None)", _project_sql(deadline_id, campaign_id, backend)),
        (f"one tick (LIMIT {BATCH})", _project_sql(deadline_id, campaign_id, backend, BATCH)),
    ]
    out: list[str] = []
    if backend == "sqlite":
        con = sqlite3.connect(_sqlite_file(url), isolation_level=None)
        try:
            for stats in (False, True):
                if stats:
                    # Statistics for this connection only: ANALYZE is rolled back below.
                    con.execute("BEGIN")
                    con.execute("ANALYZE")
                for label, sql in queries:
                    plan = con.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                    t = time.perf_counter()
                    n = len(con.execute(sql).fetchall())
                    seconds = time.perf_counter() - t
                    state = "after ANALYZE" if stats else "as migrated, no statistics"
                    out.append(f"-- {label}, {state}: {n} rows in {seconds:.3f} s (sqlite3 module)")
                    out += [f"  {'  ' * _depth(plan, row)}{row[3]}" for row in plan]
                if stats:
                    con.execute("ROLLBACK")
        finally:
            con.close()
        return "\n".join(out)

    async def pg():
        con = await _pg_connect(url)
        try:
            for label, sql in queries:
                rows = await con.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                out.append(f"-- {label}:")
                out.extend("  " + r[0] for r in rows)
        finally:
            await con.close()

    asyncio.run(pg())
    return "\n".join(out)


def _depth(plan: list[tuple], row: tuple) -> int:
    parents = {r[0]: r[1] for r in plan}
    depth, parent = 0, row[1]
    while parent:
        depth += 1
        parent = parents.get(parent, 0)
    return depth


def _ids(url: str, backend: str) -> tuple[int, int]:
    if backend == "sqlite":
        con = sqlite3.connect(_sqlite_file(url))
        try:
            return con.execute(
                "SELECT id, campaign_id FROM deadline WHERE name = 'pledge'"
            ).fetchone()
        finally:
            con.close()

    async def pg():
        con = await _pg_connect(url)
        try:
            row = await con.fetchrow("SELECT id, campaign_id FROM deadline WHERE name = 'pledge'")
            return row[0], row[1]
        finally:
            await con.close()

    return asyncio.run(pg())


# -- driver ---------------------------------------------------------------------------------


def bench_backend(backend: str, url: str, plan: Plan | None, args) -> dict | None:
    print(f"\n=== {backend}: {url}")
    if backend == "postgresql":
        problem = pg_reachable(url)
        if problem:
            print(f"PostgreSQL unreachable, skipped ({problem})")
            return None
    if plan is not None:
        t = time.perf_counter()
        times = build_sqlite(url, plan) if backend == "sqlite" else build_postgresql(url, plan)
        total = time.perf_counter() - t
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
        print(f"generated in {total:.1f} s ({detail})")
    else:
        print("reusing the existing data (--reuse)")
    if backend == "sqlite":
        size = sum(
            Path(_sqlite_file(url) + s).stat().st_size
            for s in ("", "-wal")
            if Path(_sqlite_file(url) + s).exists()
        )
        print(f"database file: {size / 2**20:.0f} MB")

    deadline_id, campaign_id = _ids(url, backend)
    kind = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
    print(f"\n{kind} of owing_members_query (pledge, reminder, offsets [3], 2024-04-06):")
    print(explain(url, backend, deadline_id, campaign_id))

    variants = [*ALWAYS, *args.variant]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    print("\nruns (each in a fresh process; peak = that process's VmHWM):")
    for run in range(1, args.runs + 1):
        for v in variants:
            r = run_child(url, v)
            results[v].append(r)
            print(
                f"  run {run} {v:<12} {r['seconds']:7.3f} s {r['rows']:>8} rows"
                f"  peak {r['maxrss_mb']:4.0f} MB (+{r['maxrss_mb'] - r['rss_before_mb']:.0f})"
            )
    print(f"sample row: {results['project'][0]['sample']}")

    base = statistics.median(r["seconds"] for r in results["baseline"])
    summary = {}
    print(f"\n{backend}: medians of {args.runs} runs")
    print(f"{'variant':>12} {'rows':>8} {'median s':>9} {'x base':>7} {'peak MB':>8} {'+MB':>6}")
    for v in variants:
        rs = results[v]
        med = statistics.median(r["seconds"] for r in rs)
        peak = max(r["maxrss_mb"] for r in rs)
        grow = max(r["maxrss_mb"] - r["rss_before_mb"] for r in rs)
        rows = rs[0]["rows"]
        print(f"{v:>12} {rows:>8} {med:9.3f} {med / base:7.2f} {peak:8.0f} {grow:6.0f}")
        summary[v] = {"rows": rows, "median": med, "peak": peak, "grow": grow}
    return {"backend": backend, "base": base, "variants": summary}


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--url", required=True)
    a = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_child(a.url, a.child))))


def main() -> None:
    if "--child" in sys.argv:
        _child_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=5000, help="all units, province included")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=[*(v for v in VARIANTS if v not in ALWAYS), "all"],
        help="also time a scratch variant (repeatable; 'all' for every one)",
    )
    parser.add_argument(
        "--sqlite-path",
        default=os.environ.get(
            "BENCH_SQLITE_PATH", str(Path(tempfile.gettempdir()) / "chuyende_bench.sqlite")
        ),
    )
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data of the previous run (no generation)"
    )
    args = parser.parse_args()
    if "all" in args.variant:
        args.variant = [v for v in VARIANTS if v not in ALWAYS]
    args.variant = list(dict.fromkeys(args.variant))

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    plan = None
    if not args.reuse:
        t = time.perf_counter()
        plan = Plan(args.members, args.units)
        expected = plan.expected_due()
        print(
            f"data set: {args.members} members in {args.units} units "
            f"(1 province, {DISTRICTS} districts, {len(plan.grassroots)} grassroots); "
            f"planned in {time.perf_counter() - t:.1f} s; expected due rows: {expected}"
        )
    urls = {"sqlite": f"sqlite+aiosqlite:///{args.sqlite_path}", "postgresql": args.pg_url}
    summaries = []
    for backend in backends:
        result = bench_backend(backend, urls[backend], plan, args)
        if result is None:
            summaries.append({"backend": backend, "skipped": True})
            continue
        if plan is not None and result["variants"]["project"]["rows"] != expected:
            got = result["variants"]["project"]["rows"]
            print(f"!! project returned {got} due rows, expected {expected}")
        summaries.append(result)

    print(f"\n=== summary: medians of {args.runs} runs; peak RSS = the largest VmHWM of a process")
    print("    that only connects and selects; target met: median <= 2 s and peak <= 300 MB")
    header = (
        f"{'backend':<11}{'variant':<12}{'members':>9}{'units':>7}{'due rows':>10}"
        f"{'median s':>10}{'baseline s':>11}{'ratio':>7}{'peak RSS MB':>12}{'target met':>11}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        if s.get("skipped"):
            print(f"{s['backend']:<11}skipped (unreachable)")
            continue
        for v, r in s["variants"].items():
            if v == "baseline":
                continue
            met = r["median"] <= TARGET_SECONDS and r["peak"] <= TARGET_RSS_MB
            print(
                f"{s['backend']:<11}{v:<12}{args.members:>9}{args.units:>7}{r['rows']:>10}"
                f"{r['median']:>10.3f}{s['base']:>11.3f}{r['median'] / s['base']:>7.2f}"
                f"{r['peak']:>12.0f}{'yes' if met else 'no':>11}"
            )


if __name__ == "__main__":
    main()
