"""`chuyende demo`: a seeded demo union, the Bot API emulator, the web chat page and the bot."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.context import Services
from bot.models import (
    ChatIdentity,
    Invite,
    Member,
    Pledge,
    PledgeStatus,
    PledgeVersion,
    Role,
    Unit,
    UnitLevel,
)
from bot.services import tallies
from bot.services.campaigns import apply_campaign
from bot.services.invites import create_invite
from bot.services.people import new_member
from bot.services.roles import grant_role
from bot.services.units import add_unit

logger = logging.getLogger(__name__)

DEMO_TOKEN = "123456789:DEMO-sandbox-token-not-secret-000"
DEMO_BOT_USERNAME = "chuyende_demo_bot"
DEMO_CAMPAIGN = "binh-thuan-2024"
EXPIRED_CODE = "het-han-demo"
NEWCOMER_PHONE = "+84987654321"

# (code, name, parent code)
DEMO_TREE = [
    ("BT", "LĐLĐ tỉnh Bình Thuận", None),
    ("BT-PT", "LĐLĐ thành phố Phan Thiết", "BT"),
    ("BT-HTB", "LĐLĐ huyện Hàm Thuận Bắc", "BT"),
    ("PT-THPT", "CĐCS Trường THPT Phan Thiết", "BT-PT"),
    ("PT-MAY", "CĐCS Công ty May Phan Thiết", "BT-PT"),
    ("HTB-YT", "CĐCS Trung tâm Y tế huyện Hàm Thuận Bắc", "BT-HTB"),
    ("HTB-TS", "CĐCS Nhà máy chế biến thủy sản Hàm Thuận Bắc", "BT-HTB"),
]
_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ", "Đặng", "Bùi", "Đỗ", "Huỳnh"]
_MIDDLE = ["Thị", "Văn", "Minh", "Ngọc", "Hữu", "Thanh", "Đức", "Thu"]
_GIVEN = [
    "An",
    "Bình",
    "Chi",
    "Dũng",
    "Giang",
    "Hà",
    "Hải",
    "Hạnh",
    "Hùng",
    "Hương",
    "Khánh",
    "Lan",
    "Linh",
    "Long",
    "Mai",
    "Nam",
    "Nga",
    "Phong",
    "Phương",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Vy",
    "Yến",
]
_SAMPLE_ANSWERS = {
    "thought": "Thường xuyên đọc và làm theo lời Bác; chấp hành đúng chủ trương, pháp luật.",
    "ethics": "Sống giản dị, trung thực; đoàn kết, giúp đỡ đồng nghiệp.",
    "style": "Làm việc đúng giờ, có kế hoạch; lắng nghe ý kiến người lao động.",
    "deeds": "Đề xuất một sáng kiến tiết kiệm vật tư trong tổ sản xuất.",
}


@dataclass(frozen=True)
class Persona:
    """A demo person one can chat as on the web page."""

    user_id: int
    name: str
    role: str
    unit: str
    hint: str
    phone: str
    start: str | None = None  # the invite code the page's Start button opens

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "user_id": self.user_id,
            "name": self.name,
            "role": self.role,
            "unit": self.unit,
            "hint": self.hint,
            "phone": self.phone,
        }


async def seed_demo(
    session: AsyncSession, svc: Services, members_per_unit: int = 10
) -> list[Persona]:
    """Build the demo union, put the 2024 campaign in force and file some pledges."""
    at = svc.clock.now()
    units: dict[str, Unit] = {}
    for code, name, parent in DEMO_TREE:
        units[code] = await add_unit(session, code, name, parent)
    campaign = await apply_campaign(session, svc.catalog, DEMO_CAMPAIGN, units["BT"], at)
    grassroots = [u for u in units.values() if u.level == UnitLevel.grassroots]
    rng = random.Random(2024)
    members: dict[str, list[Member]] = {}
    phone_seq = 0
    for unit in grassroots:
        members[unit.code] = []
        for _ in range(members_per_unit):
            phone_seq += 1
            name = f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"
            member = new_member(unit, name, f"+8490{phone_seq:07d}", at)
            session.add(member)
            members[unit.code].append(member)
    await session.flush()
    # About half have filed a pledge already, two of them after a revision.
    for unit_members in members.values():
        for index, member in enumerate(unit_members[: len(unit_members) // 2]):
            filed = at - timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 8))
            pledge = Pledge(
                member_id=member.id,
                campaign_id=campaign.id,
                status=PledgeStatus.submitted,
                current_version=1,
                first_submitted_at=filed,
                updated_at=filed,
            )
            session.add(pledge)
            await session.flush()
            session.add(
                PledgeVersion(
                    pledge_id=pledge.id,
                    version=1,
                    submitted_at=filed,
                    sections=dict(_SAMPLE_ANSWERS),
                )
            )
            if index == 0:
                pledge.current_version = 2
                session.add(
                    PledgeVersion(
                        pledge_id=pledge.id,
                        version=2,
                        submitted_at=filed + timedelta(days=1),
                        sections=dict(_SAMPLE_ANSWERS),
                    )
                )
    school, factory = members["PT-THPT"], members["PT-MAY"]
    lan, hung, officer, leader = school[-1], school[0], school[-2], members["HTB-YT"][-1]
    await grant_role(session, officer, units["PT-THPT"], Role.officer, at)
    await grant_role(session, leader, units["BT-HTB"], Role.leader, at)
    for user_id, member in ((9001, lan), (9002, hung), (9004, officer), (9005, leader)):
        session.add(
            ChatIdentity(
                channel="telegram",
                external_user_id=str(user_id),
                chat_id=str(user_id),
                member_id=member.id,
                consent_at=at,
                created_at=at,
            )
        )
    newcomer_phone = factory[-1].phone
    # Members and pledges were written directly: count them the way a bulk import does.
    await tallies.recount(session, [unit.id for unit in units.values()])
    await session.commit()
    invite = await create_invite(session, units["PT-MAY"], at, Role.member, None, 30)
    stranger_invite = await create_invite(session, units["PT-THPT"], at, Role.member, None, 30)
    await _expired_invite(session, units["PT-MAY"], at)
    hints = _labels(
        svc,
        "demo/personas",
        roster_code=invite.code,
        newcomer_code=stranger_invite.code,
        expired_code=EXPIRED_CODE,
    )
    school_name, factory_name = units["PT-THPT"].name, units["PT-MAY"].name
    return [
        Persona(9001, lan.full_name, "member", school_name, hints["not_pledged"], lan.phone or ""),
        Persona(9002, hung.full_name, "member", school_name, hints["pledged"], hung.phone or ""),
        Persona(
            9003,
            factory[-1].full_name,
            "member",
            factory_name,
            hints["on_roster"],
            newcomer_phone or "",
            start=invite.code,
        ),
        Persona(
            9006,
            hints["newcomer_name"],
            "member",
            school_name,
            hints["newcomer"],
            NEWCOMER_PHONE,
            start=stranger_invite.code,
        ),
        Persona(
            9004, officer.full_name, "officer", school_name, hints["officer"], officer.phone or ""
        ),
        Persona(
            9005,
            leader.full_name,
            "leader",
            units["BT-HTB"].name,
            hints["leader"],
            leader.phone or "",
        ),
    ]


def _labels(svc: Services, template: str, **context: object) -> dict[str, str]:
    """A `key: text` template read as a dict (persona hints are texts people read)."""
    return svc.renderer.pairs(template, svc.settings.locale, **context)


async def _expired_invite(session: AsyncSession, unit: Unit, at: datetime) -> None:
    """An invite that expired yesterday, so the demo can show what an old link says."""
    session.add(
        Invite(
            code="het-han-demo",
            unit_id=unit.id,
            role=Role.member,
            expires_at=at - timedelta(days=1),
            created_at=at - timedelta(days=31),
        )
    )
    await session.commit()


async def run_demo(port: int, now: datetime, database: Path) -> None:
    """Start everything on loopback and run until interrupted."""
    from bot.app import build_application, polling
    from bot.channels.emulator import BotApiEmulator
    from bot.logs import setup_logging
    from bot.migrate import upgrade_async
    from bot.runtime import make_services
    from bot.settings import Settings

    setup_logging([DEMO_TOKEN])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    emulator = BotApiEmulator(
        token=DEMO_TOKEN, bot_username=DEMO_BOT_USERNAME, port=port, page=True
    )
    await emulator.start()
    url = f"sqlite+aiosqlite:///{database}"
    settings = Settings(
        TELEGRAM_BOT_TOKEN=DEMO_TOKEN, TELEGRAM_API_BASE_URL=emulator.base_url, DATABASE_URL=url
    )
    await upgrade_async(url)
    start = now if now.tzinfo else now.replace(tzinfo=settings.tz)
    svc = make_services(settings, now=start.astimezone(UTC))
    async with svc.db.session() as session:
        personas = await seed_demo(session, svc)
    emulator.set_personas([p.as_dict() for p in personas])
    for persona in personas:
        if persona.start is None:  # already on the bot: their chat with it exists
            emulator.user(persona.user_id, first_name=persona.name, started=True)
    # Messages carry the bot's time (5/4/2024…), not the wall clock, so the chat reads true.
    emulator.clock = lambda: svc.clock.now().timestamp()
    async with polling(build_application(svc)):
        ready = svc.renderer.text(
            "cli/demo_ready",
            svc.settings.locale,
            url=f"http://127.0.0.1:{port}",
            now=svc.clock.local_now(),
        )
        print(ready, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emulator.stop()
