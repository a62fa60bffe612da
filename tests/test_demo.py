"""The offline sandbox: its seeded union, and a person joining and pledging in real Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlmodel import select

from bot.demo import seed_demo
from bot.models import ChatIdentity, Member, Pledge, PledgeStatus, Unit, UnitLevel
from tests.dialog import say

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


async def _count(session, model, *where):
    return len((await session.exec(select(model).where(*where))).all())


async def test_demo_union_has_the_promised_shape(svc):
    async with svc.db.session() as session:
        personas = await seed_demo(session, svc)
    async with svc.db.reader() as session:
        levels = [u.level for u in (await session.exec(select(Unit))).all()]
        assert levels.count(UnitLevel.province) == 1
        assert levels.count(UnitLevel.district) == 2
        assert levels.count(UnitLevel.grassroots) == 4
        assert await _count(session, Member) == 40
        assert await _count(session, Pledge, Pledge.status == PledgeStatus.submitted) == 20
        assert await _count(session, ChatIdentity) == 4
    assert {p.role for p in personas} == {"member", "officer", "leader"}
    assert all(p.hint for p in personas)


async def test_demo_personas_work_in_the_chat(svc, bot, emulator):
    async with svc.db.session() as session:
        personas = {p.user_id: p for p in await seed_demo(session, svc)}
    said = await say(svc, emulator.user(9002, first_name="Demo"), "/mypledge")
    assert "phiên bản 2" in said.text
    said = await say(svc, emulator.user(9003, first_name="Demo"), f"/start {personas[9003].start}")
    assert said.templates == ["start/consent"]
    said = await say(svc, emulator.user(9007, first_name="Demo"), "/start het-han-demo")
    assert said.templates == ["start/invite_expired"]


def _chromium() -> str | None:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.environ.get("CHUYENDE_REQUIRE_BROWSER"):
        pytest.fail("chromium is required here (CHUYENDE_REQUIRE_BROWSER) but not installed")
    return path


async def test_newcomer_joins_and_pledges_on_the_web_page(tmp_path, database_url):
    """Real headless Chromium clicks through the sandbox page against the real bot."""
    if "sqlite" not in database_url:
        pytest.skip("one browser run is enough; the page does not depend on the database")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    from tests.conftest import sandbox

    async with sandbox(tmp_path) as (svc, url, personas):
        newcomer = next(p for p in personas if p.user_id == 9006)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = await browser.new_page(viewport={"width": 420, "height": 860})
            try:
                await page.goto(url)
                await page.select_option("#persona-select", str(newcomer.user_id))
                await page.click("#start-button")
                await _click_button(page, "Tôi đồng ý")
                await page.get_by_test_id("share-contact-button").click()
                await _wait_text(page, "họ và tên")
                await _type(page, "Đặng Thu Hà")
                await _wait_text(page, "Chào mừng Đặng Thu Hà")
                await _type(page, "/pledge")
                for step, answer in enumerate(
                    [
                        "Học và làm theo Bác về thực hành dân chủ.",
                        "Sống giản dị, trung thực.",
                        "Lắng nghe đồng nghiệp.",
                        "Công khai việc chấm điểm thi đua trong tổ.",
                    ],
                    start=1,
                ):
                    await _wait_text(page, f"Phần {step}/4")
                    await _type(page, answer)
                await _wait_text(page, "Xem lại bản đăng ký")
                await _click_button(page, "Gửi bản đăng ký")
                await _wait_text(page, "Đã nhận bản đăng ký")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "demo-pledge.png"), full_page=True)
            finally:
                await browser.close()
        async with svc.db.reader() as session:
            member = (
                await session.exec(select(Member).where(Member.full_name == "Đặng Thu Hà"))
            ).one()
            pledge = (await session.exec(select(Pledge).where(Pledge.member_id == member.id))).one()
        assert pledge.status == PledgeStatus.submitted and not pledge.late


async def _type(page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.click("#send-button")


async def _click_button(page, text: str) -> None:
    button = page.get_by_test_id("inline-button").filter(has_text=text).last
    await button.click(timeout=10_000)


async def _wait_text(page, text: str) -> None:
    await page.get_by_test_id("bubble-bot").filter(has_text=text).last.wait_for(timeout=10_000)
