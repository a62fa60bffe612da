"""Render what a leader gets from /summary in the demo: the chart and the report draft.

    python scripts/render_samples.py [--out docs/samples]

Seeds the demo union in a throw-away SQLite database at the demo's clock (10/4/2024, the
pledge deadline's day after), then builds, through the same services, templates and builders
the bot uses, the completion chart of the district LĐLĐ thành phố Phan Thiết and the
six-month report draft of the province. If LibreOffice and pdftoppm are installed (Debian:
libreoffice-writer-nogui, poppler-utils) the draft is also rendered to PDF and its first page
to PNG, to see the layout without Word.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

from bot.demo import seed_demo
from bot.documents import chart, report_docx
from bot.migrate import upgrade_async
from bot.models import ReportKind
from bot.runtime import make_services
from bot.services import summary
from bot.services.units import require_unit
from bot.settings import Settings

AT_LOCAL = datetime(2024, 4, 10, 9, 0)


async def render(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'samples.db'}"
        await upgrade_async(url)
        settings = Settings(DATABASE_URL=url, _env_file=None)
        svc = make_services(settings, now=AT_LOCAL)
        try:
            async with svc.db.session() as session:
                await seed_demo(session, svc)
                now, tz, today = svc.clock.now(), svc.clock.tz, svc.clock.today()
                district = await require_unit(session, "BT-PT")
                view = await summary.for_unit(session, district.id, now, tz)
                words = svc.renderer.pairs("summary/chart", "vi", unit=district, today=today)
                bars = [(child.unit.name, child.pledged_share) for child in view.children]
                png = chart.completion_png(words["title"], words["xlabel"], bars)
                province = await require_unit(session, "BT")
                facts = await summary.report_facts(session, province, ReportKind.six_month, now, tz)
                draft = report_docx.build(svc.renderer.text("report/draft", "vi", f=facts))
        finally:
            await svc.db.dispose()
    written = [out / "summary-chart.png", out / "report-draft.docx"]
    written[0].write_bytes(png)
    written[1].write_bytes(draft)
    office = shutil.which("libreoffice") or shutil.which("soffice")
    if office:
        subprocess.run(
            [office, "--headless", "--convert-to", "pdf", "--outdir", str(out), str(written[1])],
            check=True,
            capture_output=True,
        )
        written.append(out / "report-draft.pdf")
        if shutil.which("pdftoppm"):
            page = out / "report-draft-page1"
            subprocess.run(
                ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile",
                 str(written[2]), str(page)],
                check=True,
            )  # fmt: skip
            written.append(page.with_suffix(".png"))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/samples"))
    for path in asyncio.run(render(parser.parse_args().out)):
        print(path)


if __name__ == "__main__":
    main()
