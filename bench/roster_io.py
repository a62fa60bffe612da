"""Benchmark: importing a 100,000-row roster and exporting the 100,000-member list.

The issue's targets: `chuyende import-roster` of 100,000 rows into a fresh, migrated
database in at most 60 s, and `chuyende export-members` of 100,000 members in at most 20 s.

    python bench/roster_io.py [--db sqlite|postgresql|both] [--rows 100000] [--units 500]
                              [--runs 3] [--pg-url URL] [--keep]

The roster is generated once (and kept in the temp directory for later runs): a title row,
a blank row, a Vietnamese header, then rows with Vietnamese names (10% stored NFD), phones in
the forms real files have (30% numbers without the leading 0, `+84 9xx xxx xxx`, `84…`,
dotted, plain), birth dates as d/m/yyyy and dd/mm/yyyy text, date cells and Excel serial
numbers (10% blank), gender, position, email for some, a member code for all, and one of
`--units` grassroots unions (half named by code and name, half by name only, so the import
generates their codes).

Each run builds a fresh database (migrations, BT province → D1 district, the Bình Thuận 2024
campaign at the province) and times, each as the admin runs it (a fresh `python -m bot.cli`
process, wall clock):

- `import`: `chuyende import-roster FILE --unit D1` (all rows new, the sub-units created);
- `reimport`: the same file again (every row unchanged, nothing written);
- `export`: `chuyende export-members --unit D1 --out FILE` after 60% of the members were
  given a chat identity and 45% a submitted pledge (some late, approved or returned);

and in-process, to show where the time goes: `parse` (`bot.rosterfile.read` alone) and
`query` (`bot.services.exports.collect_member_rows` alone). Baselines in the same run, no
database: `openpyxl-read` (iterating the same file in read-only mode, values only) and
`openpyxl-write` (writing 100,000 rows of the export's shape in write-only mode).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"import": 60.0, "export": 20.0}
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_roster"
PG_ADMIN_DBS = ("postgres", "test")  # only to CREATE / DROP our own database
NOW = "2024-04-20T08:00:00+07:00"  # the 2024 campaign is in force, its pledge deadline past

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
          "Đỗ", "Hồ", "Ngô", "Dương", "Lý")  # fmt: skip
MIDDLE = ("Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quốc", "Thu", "Xuân", "Thị Thu",
          "Văn Đức", "Hoàng", "Mỹ")  # fmt: skip
GIVEN = ("An", "Bình", "Cường", "Dũng", "Đào", "Hà", "Hải", "Hạnh", "Hùng", "Hương", "Lan",
         "Linh", "Long", "Mai", "Nam", "Phương", "Quang", "Sơn", "Tâm", "Thảo", "Trang", "Yến",
         "Khoa", "Nguyệt", "Tuấn", "Việt", "Ánh", "Ðức")  # fmt: skip
POSITIONS = ("Giáo viên", "Công nhân", "Kế toán", "Tổ trưởng", "Nhân viên", "Kỹ sư", None)
PREFIXES = (
    *("90", "91", "93", "94", "96", "97", "98", "32", "33", "34", "35", "36", "37", "38"),
    *("39", "70", "76", "77", "78", "79", "81", "82", "83", "84", "85", "86", "88", "89"),
)
HEADER = ["STT", "Họ và tên", "Ngày sinh", "Giới tính", "Mã đơn vị", "Đơn vị", "Số điện thoại",
          "Chức vụ", "Email", "Mã đoàn viên"]  # fmt: skip


# -- the file ---------------------------------------------------------------------------------


def _phone(i: int, rng: random.Random):
    national = PREFIXES[i % len(PREFIXES)] + f"{(i * 7919) % 10_000_000:07d}"
    form = rng.random()
    if form < 0.30:
        return int(national)  # Excel dropped the leading zero
    if form < 0.40:
        return f"+84 {national[:3]} {national[3:6]} {national[6:]}"
    if form < 0.50:
        return "84" + national
    if form < 0.70:
        return f"0{national[:3]}.{national[3:6]}.{national[6:]}"
    return "0" + national


def _birth(rng: random.Random):
    day = date(1965, 1, 1) + timedelta(days=rng.randrange(0, 365 * 38))
    form = rng.random()
    if form < 0.25:
        return f"{day.day:02d}/{day.month:02d}/{day.year}"
    if form < 0.50:
        return f"{day.day}/{day.month}/{day.year}"
    if form < 0.75:
        return datetime(day.year, day.month, day.day)
    if form < 0.90:
        return (day - date(1899, 12, 30)).days  # an Excel serial number
    return None


def generate(path: Path, rows: int, units: int, seed: int = 2024) -> None:
    from openpyxl import Workbook

    rng = random.Random(seed)
    book = Workbook(write_only=True)
    sheet = book.create_sheet("Danh sách")
    sheet.append(["DANH SÁCH ĐOÀN VIÊN LĐLĐ HUYỆN (dữ liệu thử)"])
    sheet.append([])
    sheet.append(HEADER)
    for i in range(rows):
        name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        if rng.random() < 0.10:
            name = unicodedata.normalize("NFD", name)
        unit = rng.randrange(units)
        by_code = unit < units // 2
        sheet.append(
            [
                i + 1,
                name,
                _birth(rng),
                rng.choice(("Nam", "Nữ")),
                f"CD{unit:03d}" if by_code else None,
                f"CĐCS Đơn vị số {unit}",
                _phone(i, rng),
                rng.choice(POSITIONS),
                f"dv{i}@congdoan.vn" if rng.random() < 0.2 else None,
                f"DV{i:06d}",
            ]
        )
    book.save(path)


# -- baselines --------------------------------------------------------------------------------


def baseline_read(path: Path) -> tuple[float, int]:
    from openpyxl import load_workbook

    t = time.perf_counter()
    book = load_workbook(path, read_only=True, data_only=True)
    count = sum(1 for _ in book.worksheets[0].iter_rows(values_only=True))
    book.close()
    return time.perf_counter() - t, count


def baseline_write(path: Path, rows: int) -> float:
    from openpyxl import Workbook

    data = [
        (f"CD{i % 500:03d}", f"CĐCS Đơn vị số {i % 500}", f"Nguyễn Văn {GIVEN[i % len(GIVEN)]}",
         f"DV{i:06d}", "Giáo viên", f"09{i:08d}", "Có", "Đúng hạn", date(2024, 4, 2))
        for i in range(rows)
    ]  # fmt: skip
    t = time.perf_counter()
    book = Workbook(write_only=True)
    sheet = book.create_sheet("x")
    for row in data:
        sheet.append(row)
    book.save(path)
    return time.perf_counter() - t


# -- the database -----------------------------------------------------------------------------


async def _pg_admin(url: str):
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    last: Exception | None = None
    for database in PG_ADMIN_DBS:
        try:
            return await asyncpg.connect(
                host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                database=database, timeout=5,
            )  # fmt: skip
        except Exception as exc:
            last = exc
    assert last is not None
    raise last


async def _pg_recreate(url: str, drop_only: bool = False) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name and name.replace("_", "").isalnum(), name
    con = await _pg_admin(url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def fresh_database(url: str) -> None:
    """Migrations, BT → D1, the 2024 campaign at BT."""
    from bot.clock import Clock
    from bot.db import Database
    from bot.migrate import upgrade_async
    from bot.runtime import make_services
    from bot.services.campaigns import apply_campaign
    from bot.services.units import add_unit
    from bot.settings import Settings

    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).unlink(missing_ok=True)
    else:
        await _pg_recreate(url)
    await upgrade_async(url)
    settings = Settings(DATABASE_URL=url, _env_file=None)
    db = Database(url)
    svc = make_services(settings, db=db, clock=Clock(settings.tz, datetime.fromisoformat(NOW)))
    try:
        async with db.session() as session:
            province = await add_unit(session, "BT", "LĐLĐ tỉnh Bình Thuận")
            await add_unit(session, "D1", "LĐLĐ huyện thử nghiệm", "BT")
            await apply_campaign(session, svc.catalog, "binh-thuan-2024", province, svc.clock.now())
    finally:
        await db.dispose()


async def seed_status(url: str, seed: int = 7) -> None:
    """60% of members on the bot, 45% with a submitted pledge (not timed)."""
    from sqlalchemy import insert
    from sqlmodel import select

    from bot.db import Database
    from bot.models import Campaign, ChatIdentity, Member, Pledge, PledgeStatus, ReviewDecision

    rng = random.Random(seed)
    at = datetime(2024, 4, 5, 1, 0, tzinfo=UTC)
    db = Database(url)
    try:
        async with db.session() as session:
            campaign_id = (await session.exec(select(Campaign.id))).first()
            ids = list((await session.exec(select(Member.id))).all())
            identities, pledges = [], []
            for member_id in ids:
                if rng.random() < 0.6:
                    identities.append({"channel": "telegram", "external_user_id": str(member_id),
                                       "chat_id": str(member_id), "member_id": member_id,
                                       "created_at": at})  # fmt: skip
                if rng.random() < 0.45:
                    roll = rng.random()
                    review = (ReviewDecision.approved if roll < 0.2 else
                              ReviewDecision.returned if roll < 0.25 else None)  # fmt: skip
                    pledges.append({"member_id": member_id, "campaign_id": campaign_id,
                                    "status": PledgeStatus.submitted, "draft": {},
                                    "current_version": 1, "first_submitted_at": at,
                                    "late": roll > 0.8, "review": review})  # fmt: skip
            conn = await session.connection()
            for table, rows in ((ChatIdentity.__table__, identities), (Pledge.__table__, pledges)):
                for start in range(0, len(rows), 10_000):
                    await conn.execute(insert(table), rows[start : start + 10_000])
            await session.commit()
    finally:
        await db.dispose()


async def query_only(url: str) -> tuple[float, int]:
    from bot.clock import Clock
    from bot.db import Database
    from bot.services.exports import collect_member_rows
    from bot.services.units import require_unit
    from bot.settings import Settings

    clock = Clock(Settings(_env_file=None).tz, datetime.fromisoformat(NOW))
    db = Database(url)
    try:
        async with db.reader() as session:
            unit = await require_unit(session, "D1")
            t = time.perf_counter()
            listing = await collect_member_rows(session, unit, clock.now(), clock.tz)
            return time.perf_counter() - t, len(listing.rows)
    finally:
        await db.dispose()


def cli(url: str, *args: str) -> tuple[float, str]:
    """Run `chuyende …` as an admin would: a fresh process; wall-clock seconds."""
    env = {**os.environ, "DATABASE_URL": url, "CHUYENDE_LOCALE": "en", "CHUYENDE_NOW": NOW}
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"chuyende {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


# -- the runs ---------------------------------------------------------------------------------


def one_run(url: str, roster: Path, workdir: Path, rows: int) -> dict[str, float]:
    from bot import rosterfile

    times: dict[str, float] = {}
    times["openpyxl-read"], read_rows = baseline_read(roster)
    assert read_rows >= rows + 3, read_rows
    times["openpyxl-write"] = baseline_write(workdir / "baseline.xlsx", rows)
    t = time.perf_counter()
    parsed = rosterfile.read(roster, roster.name)
    times["parse"] = time.perf_counter() - t
    assert len(parsed.rows) == rows and not parsed.problems, parsed.problems[:3]
    del parsed

    asyncio.run(fresh_database(url))
    times["import"], out = cli(url, "import-roster", str(roster), "--unit", "D1")
    assert f"New members:     {rows}" in out, out
    times["reimport"], out = cli(url, "import-roster", str(roster), "--unit", "D1")
    assert f"Unchanged:       {rows}" in out, out
    asyncio.run(seed_status(url))
    times["query"], listed = asyncio.run(query_only(url))
    assert listed == rows, listed
    exported = workdir / "members.xlsx"
    times["export"], out = cli(url, "export-members", "--unit", "D1", "--out", str(exported))
    assert f"Wrote {rows} members" in out, out
    return times


def report(backend: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"\n{backend}: medians over {len(runs)} runs (seconds)")
    for key in ("openpyxl-read", "parse", "import", "reimport"):
        print(f"  {key:15} {medians[key]:7.2f}")
    for key in ("openpyxl-write", "query", "export"):
        print(f"  {key:15} {medians[key]:7.2f}")
    for key, target in TARGETS.items():
        verdict = "meets" if medians[key] <= target else "MISSES"
        ratio = medians[key] / medians["openpyxl-read" if key == "import" else "openpyxl-write"]
        print(f"  {key} {medians[key]:.1f} s {verdict} the {target:.0f} s target "
              f"({ratio:.1f}x the openpyxl baseline)")  # fmt: skip
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    args = parser.parse_args()

    workdir = Path(tempfile.gettempdir()) / "chuyende-bench-roster"
    workdir.mkdir(exist_ok=True)
    roster = workdir / f"roster-{args.rows}-{args.units}.xlsx"
    if not roster.exists():
        t = time.perf_counter()
        generate(roster, args.rows, args.units)
        print(f"generated {roster} in {time.perf_counter() - t:.1f} s")
    print(f"roster: {roster} ({roster.stat().st_size / 1e6:.1f} MB, {args.rows} rows, "
          f"{args.units} sub-units)")  # fmt: skip

    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for backend in backends:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}" if backend == "sqlite" else args.pg_url
        runs = []
        for number in range(1, args.runs + 1):
            times = one_run(url, roster, workdir, args.rows)
            print(f"{backend} run {number}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
            runs.append(times)
        report(backend, runs)
        if backend == "postgresql" and not args.keep:
            asyncio.run(_pg_recreate(url, drop_only=True))


if __name__ == "__main__":
    main()
