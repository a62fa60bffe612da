"""Wizard answers of many members stored together (the group commit, bot.write_batch), read
together too (the grouped reads, bot.read_batch), on SQLite and on PostgreSQL.

What a member sees must not change: their own answer saved, the next step shown after it
was stored, and an answer that lost a race with another change of their chat still saved.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    column,
    func,
    literal_column,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import select

from bot.models import (
    ChatState,
    Pledge,
    PledgeStatus,
    PledgeVersion,
    ProcessedUpdate,
    UnitTally,
)
from bot.read_batch import PreparedRead
from bot.services import tallies
from bot.write_batch import Prepared, Write, prepared_increment, prepared_insert, prepared_update
from tests import factories
from tests.dialog import label, press, say
from tests.services import admin_cli

MEMBERS = 12


@pytest.fixture
async def members(svc, bot, emulator, union):
    users = []
    async with svc.db.session() as session:
        for n in range(MEMBERS):
            member = await factories.make_member(
                session, svc, union.school, f"Trần Văn {n}", f"+8491300{n:04d}"
            )
            await factories.link(session, svc, member, 900 + n)
            user = emulator.user(900 + n, first_name=f"Thành viên {n}")
            user.member_id = member.id
            users.append(user)
    return users


async def _drafts(svc) -> dict[int, dict[str, str]]:
    async with svc.db.reader() as session:
        return {p.member_id: p.draft for p in (await session.exec(select(Pledge))).all()}


async def test_members_typing_at_once_each_get_their_own_answer_saved(svc, members):
    for user in members:
        await say(svc, user, "/pledge")
    batch = svc.db.write_batch
    before = (batch.batches, batch.turns)

    await asyncio.gather(
        *(user.send(f"Phần một của người số {n}.") for n, user in enumerate(members))
    )
    replies = [await user.next_reply(timeout=15) for user in members]

    for reply in replies:
        assert reply.text.startswith("✔️ Đã lưu.")
        assert "Phần 2/4" in reply.text
    drafts = await _drafts(svc)
    for n, user in enumerate(members):
        assert list(drafts[user.member_id].values()) == [f"Phần một của người số {n}."]
    batches, turns = batch.batches - before[0], batch.turns - before[1]
    assert turns == MEMBERS
    assert batches < turns  # fewer transactions than answers


async def _moved_on_while_waiting(svc, act) -> None:
    """Do `act` while its group commit cannot go in: on SQLite the one write connection
    is taken, on PostgreSQL the chat's state row is locked. Once its writes wait, move the
    chat's state on (as another device pressing a button would), then let them run."""
    holder = await svc.db.engine.connect()
    try:
        if not svc.db.sqlite:
            await holder.execute(text("SELECT version FROM chatstate FOR UPDATE"))
        await act
        for _ in range(200):
            if svc.db.write_batch.waiting:
                break
            await asyncio.sleep(0.02)
        assert svc.db.write_batch.waiting, "the turn never reached the group commit"
        await holder.execute(text("UPDATE chatstate SET version = version + 1"))
        await holder.commit()
    finally:
        await holder.close()


async def test_an_answer_that_lost_a_race_is_still_saved_once(svc, members):
    """The chat's state moves on (another device pressed a button) after the answer was
    read and before its writes went in: they are refused whole, and the answer is then
    handled on the ORM path, against the state as it is now."""
    user = members[0]
    await say(svc, user, "/pledge")
    async with svc.db.reader() as session:
        opened = (await session.exec(select(ChatState))).one().version
    await _moved_on_while_waiting(svc, user.send("Câu trả lời đến giữa lúc trạng thái đổi."))

    reply = await user.next_reply(timeout=15)
    assert reply.text.startswith("✔️ Đã lưu.")
    assert "Phần 2/4" in reply.text
    assert await user.replies_until_idle(idle=0.3) == []
    drafts = await _drafts(svc)
    assert list(drafts[user.member_id].values()) == ["Câu trả lời đến giữa lúc trạng thái đổi."]
    async with svc.db.reader() as session:
        [state] = (await session.exec(select(ChatState))).all()
    assert state.step == 1
    assert state.version == opened + 2  # the other change, then the answer on the ORM path


async def test_a_redelivered_answer_is_neither_saved_again_nor_answered_twice(
    svc, members, emulator
):
    user = members[0]
    await say(svc, user, "/pledge")
    update_id = await user.send("Chỉ một lần.")
    assert (await user.next_reply(timeout=15)).text.startswith("✔️ Đã lưu.")
    emulator.redeliver(update_id)
    assert await user.replies_until_idle(idle=0.5) == []
    async with svc.db.reader() as session:
        [state] = (await session.exec(select(ChatState))).all()
    assert state.step == 1
    assert list((await _drafts(svc))[user.member_id].values()) == ["Chỉ một lần."]


def _mark_writes(*ids: int, if_absent: bool = False) -> list[Write]:
    """A turn of done marks, one per id, each expected to add its row (`if_absent`: one
    already there adds nothing, and the turn stops at it)."""
    insert = prepared_insert(ProcessedUpdate.__table__, ("channel", "update_id", "processed_at"),
                             if_absent=if_absent)
    return [
        insert.bind({"new_channel": "t", "new_update_id": n,
                     "new_processed_at": datetime(2024, 4, 5, n % 24, tzinfo=UTC)})
        for n in ids
    ]


async def test_a_failing_turn_in_a_group_commit_is_undone_alone(db, clock):
    """Each turn's writes go in whole or not at all; the other turns of the batch go in."""
    batch = db.write_batch
    await batch.apply(_mark_writes(1))
    no_state = prepared_update(ChatState.__table__, match=("identity_id",), assign=("step",))
    touches_nothing = [no_state.bind({"seen_identity_id": -1, "new_step": 0})]
    outcomes = await asyncio.gather(
        batch.apply(_mark_writes(2, 3)),
        batch.apply(_mark_writes(4, 1)),  # 1 is there already: 4 must not stay either
        batch.apply(_mark_writes(5) + touches_nothing),  # its second write expects one row
        batch.apply(_mark_writes(6)),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[2] == 1  # the index of the write that did not match
    async with db.reader() as session:
        ids = sorted((await session.exec(select(ProcessedUpdate.update_id))).all())
    assert ids == [1, 2, 3, 6]


async def test_a_turn_whose_update_is_done_already_writes_nothing_the_others_go_in(db):
    """Forty turns at once, each a done mark then a write of its own: the one whose update
    is marked already (a redelivery) stops there, and its write stays out; on PostgreSQL
    the others' share their statements' round trips and still each go in whole."""
    batch = db.write_batch
    await batch.apply(_mark_writes(7))
    outcomes = await asyncio.gather(*(
        batch.apply(_mark_writes(n, if_absent=True) + _mark_writes(1000 + n))
        for n in range(40)
    ))
    assert outcomes == [0 if n == 7 else None for n in range(40)]
    async with db.reader() as session:
        ids = set((await session.exec(select(ProcessedUpdate.update_id))).all())
    assert ids == set(range(40)) | {1000 + n for n in range(40) if n != 7}


async def test_reads_handed_over_at_once_are_read_together_each_turn_its_own(db):
    """One read transaction for the turns that asked at once; each gets its own rows, as
    the columns' types make them, and a turn whose statement fails gets the error alone."""
    reads = db.read_batch
    await db.write_batch.apply(_mark_writes(1, 2, 3))
    done = PreparedRead.of(
        select(ProcessedUpdate.update_id, ProcessedUpdate.processed_at).where(
            ProcessedUpdate.update_id == bindparam("update_id")
        )
    )
    broken = PreparedRead.of(
        text("SELECT update_id FROM no_such_table").columns(column("update_id", Integer))
    )
    before = reads.batches
    outcomes = await asyncio.gather(
        *(reads.fetch(done.bind({"update_id": n})) for n in (1, 2)),
        reads.fetch(broken.bind({})),
        reads.fetch(done.bind({"update_id": 3}), done.bind({"update_id": 4})),
        return_exceptions=True,
    )

    def at(hour: int) -> datetime:  # SQLite keeps the UTC time without its zone
        when = datetime(2024, 4, 5, hour, tzinfo=UTC)
        return when.replace(tzinfo=None) if db.sqlite else when

    assert outcomes[0] == [[(1, at(1))]]
    assert outcomes[1] == [[(2, at(2))]]
    assert isinstance(outcomes[2], DBAPIError)  # no such table
    assert outcomes[3] == [[(3, at(3))], []]
    assert reads.batches - before == 1


async def test_an_answer_from_an_account_unlinked_elsewhere_is_not_saved(svc, members):
    """Another process took the account off its member (a statement on the database, past
    this process's hooks, as the command line's would be) after the bot last read who it
    is: the answer goes nowhere and the person is asked to join."""
    user = members[0]
    await say(svc, user, "/pledge")
    await say(svc, user, "Phần đầu, khi tài khoản còn gắn với đoàn viên.")
    async with svc.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE chatidentity SET member_id = NULL WHERE member_id = :member"),
            {"member": user.member_id},
        )
    said = await say(svc, user, "Phần hai, sau khi tài khoản đã bị gỡ.")
    assert said.templates == ["common/join_first"]
    assert list((await _drafts(svc))[user.member_id].values()) == [
        "Phần đầu, khi tài khoản còn gắn với đoàn viên."
    ]


async def test_a_member_deactivated_a_moment_ago_cannot_add_an_answer(svc, members):
    """The command line on the same SQLite file is a change the read cache cannot hear of;
    an answer is a write, so it goes in only if who is writing is still as read."""
    user = members[0]
    await say(svc, user, "/pledge")
    await say(svc, user, "Phần đầu, khi còn là đoàn viên.")
    await asyncio.to_thread(admin_cli, svc, "member", "deactivate", "--phone", "+84913000000")
    said = await say(svc, user, "Phần hai, sau khi đã rời công đoàn.")
    assert said.templates == ["common/membership_inactive"]
    assert list((await _drafts(svc))[user.member_id].values()) == [
        "Phần đầu, khi còn là đoàn viên."
    ]


async def _fill(svc, user, n: int) -> None:
    await say(svc, user, "/pledge")
    for part in range(4):
        await say(svc, user, f"Phần {part + 1} của người số {n}.")


async def test_members_filing_at_once_are_counted_right(svc, members):
    """Filings group-committed together change the stored counts by increments; the counts
    must still equal a count from scratch, after first filings and after revisions."""
    for n, user in enumerate(members):
        await _fill(svc, user, n)
    batch = svc.db.write_batch
    before = batch.turns
    submit = label(svc, "submit")
    await asyncio.gather(*(user.press(submit) for user in members))
    for user in members:
        reply = await user.next_reply(timeout=15)
        assert "đúng hạn" in reply.text
    async with svc.db.reader() as session:
        pledges = (await session.exec(select(Pledge))).all()
        filed = [(p.status, p.current_version, p.draft) for p in pledges]
        assert filed == [(PledgeStatus.submitted, 1, {})] * MEMBERS
        assert len((await session.exec(select(PledgeVersion))).all()) == MEMBERS
        assert await tallies.stored(session) == await tallies.counted_from_scratch(session)
        assert (await session.exec(select(ChatState))).all() == []
    assert batch.turns - before == MEMBERS  # every filing went in a group commit

    # Revisions (the deadline is still ahead): a new version each, the counts unchanged.
    for n, user in enumerate(members[:4]):
        await _fill(svc, user, 100 + n)
    await asyncio.gather(*(user.press(submit) for user in members[:4]))
    for user in members[:4]:
        await user.next_reply(timeout=15)
    async with svc.db.reader() as session:
        versions = {p.member_id: p.current_version for p in (await session.exec(select(Pledge)))}
        assert await tallies.stored(session) == await tallies.counted_from_scratch(session)
    assert [versions[user.member_id] for user in members] == [2] * 4 + [1] * (MEMBERS - 4)


async def test_a_filing_refused_on_the_group_path_is_refused_as_before(svc, members):
    """A submit with a section missing: the same message as ever, nothing filed."""
    user = members[0]
    await say(svc, user, "/pledge")
    await say(svc, user, "Chỉ có phần một.")
    for _ in range(3):
        await press(svc, user, label(svc, "skip"))
    said = await press(svc, user, label(svc, "submit"))
    assert said.templates == ["pledge/missing_sections"]
    async with svc.db.reader() as session:
        assert (await session.exec(select(PledgeVersion))).all() == []
        assert (await session.exec(select(Pledge))).one().status == PledgeStatus.draft


async def test_a_filing_that_lost_a_race_leaves_nothing_half_done(svc, members, emulator):
    """The chat moves on while the filing waits for its group commit: none of its writes
    (the pledge, the version, the counts) go in, and the button is then found stale."""
    user = members[0]
    await _fill(svc, user, 0)
    await _moved_on_while_waiting(svc, user.press(label(svc, "submit")))
    answer = await user.wait_callback_answer(timeout=15)
    assert answer["show_alert"]  # the stale-button pop-up, from the locked path
    async with svc.db.reader() as session:
        assert (await session.exec(select(PledgeVersion))).all() == []
        assert (await session.exec(select(Pledge))).one().status == PledgeStatus.draft
        assert await tallies.stored(session) == await tallies.counted_from_scratch(session)



async def test_batches_at_once_take_shared_counts_in_one_order(db, union):
    """Two batches run at once (PostgreSQL runs three, each process its own) whose turns
    add to the same two units' counts in opposite orders: the counts go in after every
    turn, in one order, so neither deadlocks with the other and both turns go in."""
    if db.sqlite:
        pytest.skip("SQLite runs one batch at a time: there is no other to wait on")
    increment = prepared_increment(UnitTally.__table__, keys=("unit_id",),
                                   counters=tallies.ROSTER_FIELDS)
    pause = Prepared.of(select(literal_column("1")).select_from(func.pg_sleep(0.3)))

    def adding(first: int, then: int) -> list[Write]:
        one_member = {"new_members": 1, "new_active": 0, "new_on_bot": 0}
        return [increment.bind({"new_unit_id": first, **one_member}), pause.bind({}),
                increment.bind({"new_unit_id": then, **one_member})]

    school, factory = union.school.id, union.factory.id
    async with db.reader() as session:
        before = {t.unit_id: t.members for t in (await session.exec(select(UnitTally))).all()}
    one = asyncio.create_task(db.write_batch.apply(adding(school, factory)))
    while not db.write_batch.running:  # its batch has begun: the next is another batch
        await asyncio.sleep(0.01)
    other = db.write_batch.apply(adding(factory, school))
    assert await asyncio.gather(one, other) == [None, None]
    async with db.reader() as session:
        after = {t.unit_id: t.members for t in (await session.exec(select(UnitTally))).all()}
    assert after[school] == before.get(school, 0) + 2
    assert after[factory] == before.get(factory, 0) + 2


async def test_a_step_handed_over_just_as_a_batch_ends_is_not_left_waiting(db):
    """The second request is handed over in the same turn of the event loop as the first
    one's batch ended (its caller resumes before the batch's task is tidied away): it must
    start a batch of its own, not wait for one that will never come."""

    async def one_after_another():
        assert await db.write_batch.apply(_mark_writes(1)) is None
        return await db.write_batch.apply(_mark_writes(2))

    assert await asyncio.wait_for(one_after_another(), timeout=10) is None


async def test_a_batch_refused_at_its_commit_tells_its_turn_why_and_stores_nothing(db):
    """A constraint PostgreSQL checks only at COMMIT (a deferred one) refuses a batch after
    all its statements went in: the turn is told it was an integrity error, not a broken
    connection (the webhook would have Telegram retry that for ever), and no row stays."""
    if db.sqlite:
        pytest.skip("SQLite checks every constraint at its statement")
    async with db.engine.begin() as conn:
        await conn.execute(text(
            "CREATE TABLE checked_at_commit (n integer,"
            " CONSTRAINT once UNIQUE (n) DEFERRABLE INITIALLY DEFERRED)"
        ))
        await conn.execute(text("INSERT INTO checked_at_commit VALUES (1)"))
    try:
        table = Table("checked_at_commit", MetaData(), Column("n", Integer))
        again = prepared_insert(table, ("n",))
        with pytest.raises(IntegrityError):
            await db.write_batch.apply([again.bind({"new_n": 1})])
        async with db.engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM checked_at_commit"))
        assert count == 1
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE checked_at_commit"))
