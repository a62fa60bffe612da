"""What read-only turns (/topic, a lesson page) know without asking the database.

Besides content, such a turn needs who is writing (chat identity, member, unit) and which
campaign reaches their unit. Both change rarely (a join, a transfer, a language switch, a
campaign applied), yet reading them was most of the statements of a lesson press. They are
kept here, with three guards against serving something stale:

* A write session that changes a watched table invalidates what it touched when it commits
  (the session hooks below), in this process at once.
* On PostgreSQL the same commit sends a NOTIFY inside its transaction (so only a committed
  change is announced), and each process's listener (:mod:`bot.cachebus`) invalidates its
  copy. A cache on PostgreSQL serves nothing while its listener is not connected.
* An entry lives at most ``ttl`` seconds: the bound for changes this process cannot hear of
  (the CLI writing to the same SQLite file from another process).

Only read-only turns read from here, and turns on SQLite's group path, whose writes go in
only behind guards that the person is still as read (bot.services.people.unchanged); the
rest of what writes reads the person afresh in its own transaction, so every rule is still
checked against the database. Only joined, active,
unblocked persons are kept: someone who joined a moment ago on another process must never be
told to join.

A read that began before an invalidation must not be stored after it (it may hold the old
row): `generation()` is taken before the read and `put` refuses when it moved since.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import ORMExecuteState, Session

from bot.db import WriteSession

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chuyende_cache"
# PostgreSQL refuses a NOTIFY payload over 8000 bytes; past this, announce "everything".
_PAYLOAD_LIMIT = 7000

PEOPLE = "people"
CAMPAIGNS = "campaigns"
# Tables whose rows a cached entry is made of, and the kind of entry they feed.
_WATCHED = {
    "chatidentity": PEOPLE,
    "member": PEOPLE,
    "unit": PEOPLE,
    "campaign": CAMPAIGNS,
    "deadline": CAMPAIGNS,
    "lesson": CAMPAIGNS,
}


@dataclass
class Change:
    """What one committed transaction touched, as the caches need to know it."""

    identities: set[tuple[str, str]] = field(default_factory=set)  # (channel, user id)
    members: set[int] = field(default_factory=set)
    all_people: bool = False
    campaigns: bool = False

    def __bool__(self) -> bool:
        return bool(self.identities or self.members or self.all_people or self.campaigns)

    def payload(self) -> str:
        body = json.dumps(
            {
                "i": sorted(self.identities),
                "m": sorted(self.members),
                "p": self.all_people,
                "c": self.campaigns,
            },
            separators=(",", ":"),
        )
        if len(body) > _PAYLOAD_LIMIT:
            return json.dumps({"i": [], "m": [], "p": True, "c": self.campaigns})
        return body

    @classmethod
    def from_payload(cls, payload: str) -> Change:
        try:
            data = json.loads(payload)
            return cls(
                identities={(str(c), str(u)) for c, u in data["i"]},
                members={int(m) for m in data["m"]},
                all_people=bool(data["p"]),
                campaigns=bool(data["c"]),
            )
        except (ValueError, KeyError, TypeError):  # unreadable: forget everything, be safe
            logger.warning("unreadable cache invalidation, clearing the cache")
            return cls(all_people=True, campaigns=True)


class ReadCache:
    """Persons and campaign heads for read-only turns, bounded in size and in age."""

    def __init__(
        self, *, ttl: float = 30.0, max_people: int = 10_000, needs_listener: bool = False
    ) -> None:
        self.ttl = ttl
        self.max_people = max_people
        # On PostgreSQL other processes change rows too: serve only while hearing of it.
        self.needs_listener = needs_listener
        self.listening = False
        self._generation = 0
        # key -> (expires at, member id, person), in order of expiry.
        self._people: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._people_by_member: dict[int, Hashable] = {}
        self._campaigns: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        _LIVE.add(self)

    @property
    def serving(self) -> bool:
        return self.ttl > 0 and (self.listening or not self.needs_listener)

    def generation(self) -> int:
        return self._generation

    # -- persons ---------------------------------------------------------------------------

    def person(self, key: Hashable) -> Any | None:
        entry = self._people.get(key) if self.serving else None
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return entry[2]

    def put_person(self, key: Hashable, member_id: int, person: Any, generation: int) -> None:
        if not self.serving or generation != self._generation:
            return
        now = time.monotonic()
        previous = self._people.pop(key, None)  # re-inserted last: kept in order of expiry
        if previous is not None:
            self._forget_member(key, previous[1])
        self._people[key] = (now + self.ttl, member_id, person)
        self._people_by_member[member_id] = key
        # Expired entries leave from the front, so only persons seen within the TTL stay in
        # memory (a deadline evening touches every member; they must not all stay), and the
        # size bound holds however fast they come.
        while self._people:
            old_key, (expires, old_member_id, _) = next(iter(self._people.items()))
            if expires >= now and len(self._people) <= self.max_people:
                break
            del self._people[old_key]
            self._forget_member(old_key, old_member_id)

    def _forget_member(self, key: Hashable, member_id: int) -> None:
        if self._people_by_member.get(member_id) == key:
            del self._people_by_member[member_id]

    # -- campaign heads ----------------------------------------------------------------------

    def campaign(self, key: Hashable) -> Any | None:
        entry = self._campaigns.get(key) if self.serving else None
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put_campaign(self, key: Hashable, value: Any, generation: int) -> None:
        if not self.serving or generation != self._generation:
            return
        now = time.monotonic()
        self._campaigns.pop(key, None)  # re-inserted last: kept in order of expiry
        self._campaigns[key] = (now + self.ttl, value)
        # As for persons: only units seen within the age bound stay (a province has
        # thousands, and a deadline evening touches them all).
        while self._campaigns:
            old_key, (expires, _) = next(iter(self._campaigns.items()))
            if expires >= now:
                break
            del self._campaigns[old_key]

    # -- invalidation ------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Forget what `change` touched (a commit here, or a NOTIFY from another process)."""
        self._generation += 1
        if change.campaigns:
            self._campaigns.clear()
        if change.all_people:
            self._people.clear()
            self._people_by_member.clear()
            return
        for key in change.identities:
            entry = self._people.pop(key, None)
            if entry is not None:
                self._forget_member(key, entry[1])
        for member_id in change.members:
            key = self._people_by_member.pop(member_id, None)
            if key is not None:
                self._people.pop(key, None)

    def clear(self) -> None:
        self.apply(Change(all_people=True, campaigns=True))


# Every cache of this process, so a commit anywhere in it reaches all of them.
_LIVE: weakref.WeakSet[ReadCache] = weakref.WeakSet()


def apply_everywhere(change: Change) -> None:
    for cache in list(_LIVE):
        cache.apply(change)


def people_changed(session: Session) -> None:
    """For writes the hooks cannot see (Core statements on the session's connection, such as
    the roster import): the persons are forgotten when this transaction commits."""
    _change_of(session).all_people = True


def _change_of(session: Session) -> Change:
    change = session.info.get("cache_change")
    if change is None:
        change = session.info["cache_change"] = Change()
    return change


def _note_instances(session: Session, instances: Iterable[object]) -> None:
    from bot.models import ChatIdentity, Member, Unit

    change = None
    for instance in instances:
        kind = _WATCHED.get(getattr(instance, "__tablename__", ""))
        if kind is None:
            continue
        change = change or _change_of(session)
        if kind == CAMPAIGNS:
            change.campaigns = True
        elif isinstance(instance, ChatIdentity):
            change.identities.add((instance.channel, instance.external_user_id))
            if instance.member_id is not None:
                change.members.add(instance.member_id)
        elif isinstance(instance, Member) and instance.id is not None:
            change.members.add(instance.id)
        elif isinstance(instance, Unit):
            change.all_people = True


# -- the write-session hooks ---------------------------------------------------------------


@event.listens_for(WriteSession, "after_flush")
def _flushed(session: Session, _context) -> None:
    _note_instances(session, (*session.new, *session.dirty, *session.deleted))


@event.listens_for(WriteSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    kind = _WATCHED.get(getattr(table, "name", ""))
    if kind == CAMPAIGNS:
        _change_of(state.session).campaigns = True
    elif kind == PEOPLE:  # a bulk statement: which rows is not known here
        _change_of(state.session).all_people = True


@event.listens_for(WriteSession, "before_commit")
def _before_commit(session: Session) -> None:
    if session.new or session.dirty or session.deleted:
        session.flush()  # so the hook above has seen every change this commit carries
    change = session.info.get("cache_change")
    if not change:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Inside the transaction: PostgreSQL delivers it only if, and when, this commits.
        connection.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": change.payload()},
        )


@event.listens_for(WriteSession, "after_commit")
def _after_commit(session: Session) -> None:
    change = session.info.pop("cache_change", None)
    if change:
        apply_everywhere(change)


@event.listens_for(WriteSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("cache_change", None)
