"""Benchmark: a province's /summary from the stored per-unit counts, at 1,000,000 members.

The target: `summary.for_unit` at the province root of 1,000,000 members in 5,000 units
(province → 50 districts → CĐCS) answers with p95 ≤ 50 ms, on SQLite and PostgreSQL.

    python bench/summary_scale.py [--backend sqlite|postgresql|both] [--runs 50]
                                  [--members 1000000] [--units 5000]
                                  [--unit-sweep 500,1000,2500,5000] [--member-sweep 100000,500000]
                                  [--baseline-runs 5] [--reuse] [--keep]

Each data set is built like bench/select_due.py builds its own (its `Plan` and `Rows`:
members spread over the grassroots unions, 1% inactive, 80% on the bot of whom 3% blocked,
45% with a submitted pledge, the Bình Thuận 2024 campaign applied at the province), then the
stored counts are computed with SQL, as migration 0003's backfill does. Timed, in one
process, each call in a fresh `Database.reader()` session (as a handler opens one):

- `stored`: `bot.services.summary.for_unit(session, province, at, tz)`: the project's code;
- `full scan` (baseline): the summary as it was before the stored counts (a GROUP BY over
  every member of the subtree, joined to identities and pledges), on the same data, fewer
  runs since each takes seconds. Both must report the same totals.

Then the scaling: `stored` at fixed members over a growing number of units (it should grow
with the units) and at 5,000 units over a growing number of members (it should stay flat).
PostgreSQL databases are named `bench_summary_<members>_<units>`, created and dropped through
the server's `postgres` database; `--reuse` keeps and reuses the data sets between runs
(SQLite files in the temp directory), `--keep` keeps them without reusing.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import select_due  # noqa: E402  (the data generator this benchmark shares)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
AT = datetime(2024, 4, 6, 1, 0, tzinfo=UTC)  # 08:00 on 6/4/2024, three days before 9/4
PG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
PG_ADMIN_DB = "postgres"  # never the shared `test` database
TARGET_P95_MS = 50.0
TIMEOUT_MS = 120_000  # the baseline's limit on PostgreSQL, where the old query degenerates

TALLY_SQL = (
    """
    INSERT INTO unittally (unit_id, members, active, on_bot)
    SELECT m.unit_id, COUNT(*),
           SUM(CASE WHEN m.active THEN 1 ELSE 0 END),
           SUM(CASE WHEN m.active AND EXISTS (
               SELECT 1 FROM chatidentity c
               WHERE c.member_id = m.id AND c.blocked_at IS NULL) THEN 1 ELSE 0 END)
    FROM member m GROUP BY m.unit_id
    """,
    """
    INSERT INTO unitpledgetally (unit_id, year, on_time, late, approved)
    SELECT m.unit_id, c.year,
           SUM(CASE WHEN p.late THEN 0 ELSE 1 END),
           SUM(CASE WHEN p.late THEN 1 ELSE 0 END),
           SUM(CASE WHEN p.review = 'approved' THEN 1 ELSE 0 END)
    FROM pledge p
    JOIN member m ON m.id = p.member_id
    JOIN campaign c ON c.id = p.campaign_id
    WHERE p.status = 'submitted' AND m.active
    GROUP BY m.unit_id, c.year
    """,
)


# -- building -------------------------------------------------------------------------------


def _tables(rows: select_due.Rows):
    return (
        ("member", rows.MEMBER_COLS, rows.members),
        ("chatidentity", rows.IDENTITY_COLS, rows.identities),
        ("pledge", rows.PLEDGE_COLS, rows.pledges),
    )


def build_sqlite(url: str, plan: select_due.Plan) -> float:
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
        plan.unit_rows,
    )
    con.execute("COMMIT")
    campaign_id, deadline_id = asyncio.run(select_due._apply_campaign(url))
    rows = select_due.Rows(plan, sqlite=True, deadline_id=deadline_id, campaign_id=campaign_id)
    con.execute("BEGIN")
    for table, cols, source in _tables(rows):
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        con.executemany(sql, source())
    for sql in TALLY_SQL:
        con.execute(sql)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t


def build_postgresql(url: str, plan: select_due.Plan) -> float:
    from sqlalchemy.engine import make_url

    from bot.migrate import upgrade

    name = make_url(url).database
    assert name and name.startswith("bench_summary"), name
    t = time.perf_counter()

    async def recreate():
        con = await select_due._pg_admin(url)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await con.execute(f'CREATE DATABASE "{name}"')
        finally:
            await con.close()

    asyncio.run(recreate())
    upgrade(url)

    async def load_units():
        con = await select_due._pg_connect(url)
        try:
            await con.copy_records_to_table(
                "unit",
                records=plan.unit_rows,
                columns=["id", "code", "name", "level", "parent_id", "path", "depth"],
            )
            await con.execute("SELECT setval('unit_id_seq', (SELECT max(id) FROM unit))")
        finally:
            await con.close()

    asyncio.run(load_units())
    campaign_id, deadline_id = asyncio.run(select_due._apply_campaign(url))
    rows = select_due.Rows(plan, sqlite=False, deadline_id=deadline_id, campaign_id=campaign_id)

    async def load_rest():
        con = await select_due._pg_connect(url)
        try:
            for table, cols, source in _tables(rows):
                for chunk in select_due._chunks(source(), 100_000):
                    await con.copy_records_to_table(table, records=chunk, columns=list(cols))
            for sql in TALLY_SQL:
                await con.execute(sql)
            await con.execute("VACUUM ANALYZE")
        finally:
            await con.close()

    asyncio.run(load_rest())
    return time.perf_counter() - t


async def _has_data(url: str) -> bool:
    from sqlalchemy import func, select

    from bot.db import Database
    from bot.models import UnitTally

    db = Database(url)
    try:
        async with db.reader() as session:
            return bool((await session.exec(select(func.count()).select_from(UnitTally))).one())
    except Exception:  # no such database or table: build it
        return False
    finally:
        await db.dispose()


def _url(backend: str, members: int, units: int, args) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{Path(args.dir) / f'summary_{members}_{units}.sqlite'}"
    return f"{args.pg_base}bench_summary_{members}_{units}"


def ensure(backend: str, members: int, units: int, args) -> str | None:
    """The data set's URL, built unless --reuse finds it there already."""
    url = _url(backend, members, units, args)
    if args.reuse and asyncio.run(_has_data(url)):
        print(f"  reusing {members:,} members / {units:,} units")
        return url
    plan = select_due.Plan(members, units)
    build = build_sqlite if backend == "sqlite" else build_postgresql
    seconds = build(url, plan)
    print(f"  built {members:,} members / {units:,} units with their tallies in {seconds:.0f} s")
    return url


def drop(backend: str, url: str) -> None:
    if backend == "sqlite":
        path = url.split(":///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        return
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name and name.startswith("bench_summary"), name

    async def go():
        con = await select_due._pg_admin(url)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()

    asyncio.run(go())


# -- the baseline: the summary before the stored counts (git show 1a18de9^:bot/services/summary.py)


async def full_scan_totals(session, unit_id: int, at: datetime, tz) -> tuple[int, ...]:
    """The old for_unit's query: every member of the subtree, grouped by unit path."""
    from sqlalchemy import and_, case, func
    from sqlmodel import col, select

    from bot.models import Campaign, ChatIdentity, Member, Pledge, PledgeStatus, Unit
    from bot.services import campaigns
    from bot.services.units import in_subtree

    unit = await session.get(Unit, unit_id)
    today = at.astimezone(tz).date()
    in_force = await campaigns.in_force_for_unit(session, unit, today)
    year = in_force.campaign.year if in_force else None
    on_bot = (
        select(ChatIdentity.member_id)
        .where(col(ChatIdentity.blocked_at).is_(None), col(ChatIdentity.member_id).is_not(None))
        .scalar_subquery()
    )
    pledged = (
        select(Pledge.member_id, Pledge.late)
        .join(Campaign, col(Campaign.id) == Pledge.campaign_id)
        .where(Pledge.status == PledgeStatus.submitted, Campaign.year == (year or -1))
        .subquery()
    )
    active = col(Member.active).is_(True)
    rows = await session.exec(
        select(
            Unit.path,
            func.count(Member.id),
            func.sum(case((active, 1), else_=0)),
            func.sum(case((and_(active, col(Member.id).in_(on_bot)), 1), else_=0)),
            func.sum(
                case(
                    (and_(active, pledged.c.member_id.is_not(None), pledged.c.late.is_(False)), 1),
                    else_=0,
                )
            ),
            func.sum(case((and_(active, pledged.c.late.is_(True)), 1), else_=0)),
        )
        .join(Member, col(Member.unit_id) == Unit.id)
        .outerjoin(pledged, pledged.c.member_id == Member.id)
        .where(in_subtree(unit))
        .group_by(Unit.path)
    )
    totals = [0, 0, 0, 0, 0]
    for row in rows.all():
        for i, value in enumerate(row[1:]):
            totals[i] += value or 0
    return tuple(totals)


# -- timing -----------------------------------------------------------------------------------


async def _time(url: str, runs: int, baseline_runs: int) -> dict:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from bot.db import Database
    from bot.services import summary

    db = Database(url)
    try:
        async with db.reader() as session:  # warm the connection and the page cache
            first = await summary.for_unit(session, 1, AT, TZ)
        stored = []
        for _ in range(runs):
            t = time.perf_counter()
            async with db.reader() as session:
                await summary.for_unit(session, 1, AT, TZ)
            stored.append((time.perf_counter() - t) * 1000)
        scans, scan_totals, timed_out = [], None, False
        for _ in range(baseline_runs):
            t = time.perf_counter()
            async with db.reader() as session:
                try:
                    if not db.sqlite:  # the old query can take many minutes there
                        await session.exec(text(f"SET LOCAL statement_timeout = {TIMEOUT_MS}"))
                    scan_totals = await full_scan_totals(session, 1, AT, TZ)
                except DBAPIError:
                    timed_out = True
                    break
            scans.append((time.perf_counter() - t) * 1000)
    finally:
        await db.dispose()
    total = first.total
    mine = (total.members, total.active, total.on_bot, total.on_time, total.late)
    if scan_totals is not None and scan_totals != mine:
        print(f"!! stored counts {mine} differ from the full scan {scan_totals}")
    return {
        "stored": stored,
        "scan": scans,
        "scan_timed_out": timed_out,
        "totals": mine,
        "children": len(first.children),
    }


def _p(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(backend: str, members: int, units: int, args, baseline_runs: int) -> dict:
    url = ensure(backend, members, units, args)
    result = asyncio.run(_time(url, args.runs, baseline_runs))
    result.update(members=members, units=units, url=url)
    s = result["stored"]
    line = (
        f"  {members:>9,} members {units:>6,} units: stored p50 {_p(s, 50):6.1f} ms"
        f"  p95 {_p(s, 95):6.1f} ms"
    )
    if result["scan"]:
        line += f"   full scan p50 {statistics.median(result['scan']):8.0f} ms"
    if result["scan_timed_out"]:
        line += f"   full scan > {TIMEOUT_MS / 1000:.0f} s (cancelled)"
    print(line, flush=True)
    return result


def bench_backend(backend: str, args) -> list[dict] | None:
    print(f"\n=== {backend}")
    if backend == "postgresql":
        problem = select_due.pg_reachable(f"{args.pg_base}postgres")
        if problem:
            print(f"PostgreSQL unreachable, skipped ({problem})")
            return None
    results = []
    main = measure(backend, args.members, args.units, args, args.baseline_runs)
    main["role"] = "main"
    results.append(main)
    t = main["totals"]
    print(
        f"  province totals: {t[0]:,} on the roster, {t[1]:,} active, {t[2]:,} on the bot, "
        f"{t[3]:,} pledged on time, {t[4]:,} late; {main['children']} child units"
    )
    for units in args.unit_sweep:
        if units == args.units:
            continue
        r = measure(backend, args.members, units, args, 0)
        r["role"] = "units"
        results.append(r)
    for members in args.member_sweep:
        if members == args.members:
            continue
        r = measure(backend, members, args.units, args, 0)
        r["role"] = "members"
        results.append(r)
    if not (args.reuse or args.keep):
        for r in results:
            drop(backend, r["url"])
    return results


def report(backend: str, results: list[dict], args) -> None:
    main = next(r for r in results if r["role"] == "main")
    s, scan = main["stored"], main["scan"]
    print(f"\n--- {backend}: province root, {args.members:,} members, {args.units:,} units")
    print(f"{'':<28}{'runs':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    print(f"{'stored counts (project)':<28}{len(s):>5}{_p(s, 50):>10.1f}{_p(s, 95):>10.1f}"
          f"{max(s):>10.1f}")  # fmt: skip
    if scan:
        print(f"{'full scan (baseline)':<28}{len(scan):>5}{_p(scan, 50):>10.0f}"
              f"{_p(scan, 95):>10.0f}{max(scan):>10.0f}")  # fmt: skip
        print(f"speed-up at p50: {_p(scan, 50) / _p(s, 50):.0f}x")
    if main["scan_timed_out"]:
        print(f"{'full scan (baseline)':<28} cancelled after {TIMEOUT_MS / 1000:.0f} s")
    met = _p(s, 95) <= TARGET_P95_MS
    print(f"target p95 <= {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'}")
    by_units = sorted(
        (r for r in results if r["members"] == args.members), key=lambda r: r["units"]
    )
    print(f"\nscaling with units in scope ({args.members:,} members):")
    for r in by_units:
        print(f"  {r['units']:>6,} units  p50 {_p(r['stored'], 50):6.1f} ms"
              f"  p95 {_p(r['stored'], 95):6.1f} ms")  # fmt: skip
    by_members = sorted(
        (r for r in results if r["units"] == args.units), key=lambda r: r["members"]
    )
    print(f"scaling with members ({args.units:,} units):")
    for r in by_members:
        print(f"  {r['members']:>9,} members  p50 {_p(r['stored'], 50):6.1f} ms"
              f"  p95 {_p(r['stored'], 95):6.1f} ms")  # fmt: skip


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=5000, help="all units, province included")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--unit-sweep", type=_ints, default=[500, 1000, 2500, 5000])
    parser.add_argument("--member-sweep", type=_ints, default=[100_000, 500_000, 1_000_000])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where SQLite files go")
    parser.add_argument("--pg-base", default=PG_BASE, help="server URL ending in '/'")
    parser.add_argument("--reuse", action="store_true", help="reuse data sets already built")
    parser.add_argument("--keep", action="store_true", help="keep the data sets afterwards")
    args = parser.parse_args()
    select_due.PG_ADMIN_DB = PG_ADMIN_DB
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"summary.for_unit at the province root; {args.runs} runs each, baseline "
        f"{args.baseline_runs} runs at {args.members:,} members / {args.units:,} units"
    )
    done = {}
    for backend in backends:
        results = bench_backend(backend, args)
        if results is not None:
            done[backend] = results
    print("\n=== results")
    for backend, results in done.items():
        report(backend, results, args)


if __name__ == "__main__":
    main()
