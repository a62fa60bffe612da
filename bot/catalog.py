"""The shipped campaign content as data: pydantic models of ``content/campaigns/*.yaml``.

One YAML file per campaign (``kind: campaign``) or term-wide topic (``kind: term``); the
file name without ``.yaml`` is its id. ``content/README.md`` documents the format.

Rules enforced here (``bot.content_check`` adds the template checks on top):

- every model forbids unknown fields, so a misspelt key is an error, not silently ignored;
- every text is NFC-normalised, stripped, non-empty and plain text (no HTML: the templates
  escape and format it); every text a person reads has ``vi`` and ``en``;
- dates are written ``YYYY-MM-DD`` and are real calendar dates;
- ids equal file names and are unique; a campaign's ``term`` names a known term-wide topic
  and its year falls inside that term;
- deadline names, lesson keys and pledge section keys are unique within a campaign, and a
  deadline falls in the campaign's year or the next one.

Beside the campaigns, ``reminders.yaml`` holds the default reminder policy
(:class:`ReminderPolicySpec`; a campaign's optional ``reminders:`` block overrides any of
its fields) and ``holidays.yaml`` the public holidays on which no reminder is sent
(:class:`HolidaySpec`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONTENT_DIR_ENV = "CHUYENDE_CONTENT_DIR"
CAMPAIGNS_DIR = "campaigns"
REMINDERS_FILE = "reminders.yaml"
HOLIDAYS_FILE = "holidays.yaml"

# Lengths, in characters after NFC normalisation. A lesson is one phone screen; even the
# longest allowed one fits a Telegram message (4096) with its title and buttons.
TITLE_MAX = 100
LESSON_BODY_MAX = 1500
PROMPT_MAX = 500
EXAMPLE_MAX = 500
SOURCE_TEXT_MAX = 500
NAME_MAX = 255  # issuer and document names; the database keeps them in 255 characters

# Reminders: how far ahead a reminder or digest may be planned, and the longest run of days
# one holidays.yaml entry may cover (the longest Tết break so far is 9 days).
REMINDER_DAYS_MAX = 60
HOLIDAY_SPAN_MAX = 14

# Keys end up in callback_data (≤ 64 bytes), so they are short ASCII slugs.
_ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
_YEARS_PATTERN = r"^\d{4}-\d{4}$"
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(r"\d{2}:\d{2}")
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_CONTEXT_DEFER = "defer_cross_checks"


def nfc(value: Any) -> Any:
    """NFC-normalise a string; anything else is returned unchanged."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _plain_text(value: str) -> str:
    if _HTML_TAG_RE.search(value):
        raise ValueError("plain text only, no HTML tags (the templates escape and format it)")
    return value


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"invalid date {value!r}, write it as YYYY-MM-DD")


def _parse_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        if value.second or value.microsecond or value.tzinfo is not None:
            raise ValueError(f"invalid time {value.isoformat()!r}, write it as HH:MM")
        return value
    if isinstance(value, str) and _TIME_RE.fullmatch(value.strip()):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 7:30 as the base-60 number 450.
        written = f"{value // 60:02d}:{value % 60:02d}"
        raise ValueError(
            f"invalid time {value!r}: YAML reads {written} without quotes as a number, "
            f'write it as "{written}"'
        )
    raise ValueError(f"invalid time {value!r}, write it as HH:MM")


def _text(max_length: int | None = None) -> Any:
    return Annotated[
        StrictStr,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(_plain_text),
    ]


Text = _text()
TitleStr = _text(TITLE_MAX)
LessonBodyStr = _text(LESSON_BODY_MAX)
PromptStr = _text(PROMPT_MAX)
ExampleStr = _text(EXAMPLE_MAX)
SourceTextStr = _text(SOURCE_TEXT_MAX)
NameStr = _text(NAME_MAX)
Id = Annotated[StrictStr, StringConstraints(pattern=_ID_PATTERN, max_length=40)]
Key = Annotated[StrictStr, StringConstraints(pattern=_KEY_PATTERN, max_length=32)]
LocalDate = Annotated[dt.date, BeforeValidator(_parse_date)]
# A local wall-clock time, written "HH:MM" in YAML and in JSON alike.
LocalTime = Annotated[
    dt.time,
    BeforeValidator(_parse_time),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str, when_used="json"),
]
ReminderDays = Annotated[StrictInt, Field(ge=0, le=REMINDER_DAYS_MAX)]
DigestDays = Annotated[StrictInt, Field(ge=1, le=REMINDER_DAYS_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        return nfc(value)


class LocalizedText(_Model):
    """A text a person reads: Vietnamese first, and a real English translation."""

    vi: Text
    en: Text

    def get(self, locale: str) -> str:
        """The text in ``locale`` ("vi" or "en"); Vietnamese for anything else."""
        return self.en if locale == "en" else self.vi


class TitleText(LocalizedText):
    vi: TitleStr
    en: TitleStr


class LessonBody(LocalizedText):
    vi: LessonBodyStr
    en: LessonBodyStr


class PromptText(LocalizedText):
    vi: PromptStr
    en: PromptStr


class ExampleText(LocalizedText):
    vi: ExampleStr
    en: ExampleStr


class DeadlineSpec(_Model):
    """A deadline exactly as a document gives it (see the Deadlines contract in DESIGN.md).

    ``inclusive`` follows the wording: "chậm nhất ngày 6/5" → true (6/5 still counts),
    "trước ngày 10/4" → false (9/4 is the last day). Whether something was on time is
    decided by the campaigns service, not here.
    """

    name: Key
    title: TitleText
    date: LocalDate
    inclusive: StrictBool
    owed_by: Literal["member", "unit"]
    source_text: SourceTextStr

    @property
    def last_day(self) -> dt.date:
        """The last calendar day that still meets the deadline."""
        return self.date if self.inclusive else self.date - dt.timedelta(days=1)


class LessonSpec(_Model):
    """One short lesson: one phone screen of plain text."""

    key: Key
    title: TitleText
    body: LessonBody


class PledgeSectionSpec(_Model):
    """One section of the personal pledge form (bản đăng ký học tập và làm theo)."""

    key: Key
    title: TitleText
    prompt: PromptText
    example: ExampleText


def _duplicates(items: Sequence[Any], attr: str, where: str, what: str) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            problems.append(
                (
                    f"{where}[{index}].{attr}",
                    f"duplicate {what} {value!r} (also {where}[{seen[value]}])",
                )
            )
        else:
            seen[value] = index
    return problems


class _Spec(_Model):
    """Shared behaviour of the two file kinds."""

    def own_problems(self) -> list[tuple[str, str]]:
        """Consistency problems inside this one file, as (dotted field, message)."""
        return []

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Any:
        # The loader defers these checks so that it can report each at its own field.
        if info.context and info.context.get(_CONTEXT_DEFER):
            return self
        problems = self.own_problems()
        if problems:
            raise ValueError("; ".join(f"{field}: {message}" for field, message in problems))
        return self


def _prefixed(prefix: str, problems: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Problems of a nested part, with their fields put under ``prefix``."""
    return [(f"{prefix}.{field}" if field else prefix, message) for field, message in problems]


# --- reminders and holidays ----------------------------------------------------------------


def _offset_problems(offsets: Sequence[int]) -> list[tuple[str, str]]:
    seen: dict[int, int] = {}
    problems = []
    for index, days in enumerate(offsets):
        if days in seen:
            problems.append(
                (f"offsets_days[{index}]", f"duplicate {days} (also offsets_days[{seen[days]}])")
            )
        else:
            seen[days] = index
    return problems


def _sorted_offsets(value: tuple[int, ...]) -> tuple[int, ...]:
    # From the first reminder to the last. Duplicates stay where they were written, so that
    # the check can point at them (the policy does not load with them).
    if len(set(value)) != len(value):
        return value
    return tuple(sorted(value, reverse=True))


Offsets = Annotated[tuple[ReminderDays, ...], AfterValidator(_sorted_offsets)]


class ReminderWindow(_Spec):
    """The local hours in which the bot sends on its own: ``start <= time < end``, both
    ``HH:MM`` in the bot's time zone. It cannot cross midnight."""

    start: LocalTime
    end: LocalTime

    def allows(self, moment: dt.time) -> bool:
        """Whether a message may go out at local time ``moment``."""
        return self.start <= moment < self.end

    def own_problems(self) -> list[tuple[str, str]]:
        if self.start >= self.end:
            message = (
                f"{self.end:%H:%M} is not after start {self.start:%H:%M} "
                "(the window cannot cross midnight)"
            )
            return [("end", message)]
        return []


class ReminderPolicySpec(_Spec):
    """When the bot reminds members of a deadline, and when leaders get their digests.

    ``offsets_days`` counts local days before the deadline's last day (0 = that day; see
    :attr:`DeadlineSpec.last_day`), sorted from the earliest reminder to the last; each is
    sent once the ``window`` opens that day. With ``skip_holidays`` nothing is sent on a day
    in ``holidays.yaml``. Leaders get a digest ``digest_days_before`` the last day and
    ``digest_days_after`` it.

    ``ReminderPolicySpec.model_validate(policy.model_dump(mode="json"))`` gives the policy
    back, so a unit's own policy can be kept as JSON on a database row.
    """

    offsets_days: Offsets
    window: ReminderWindow
    skip_holidays: StrictBool
    digest_days_before: DigestDays
    digest_days_after: DigestDays

    def merged(
        self, override: ReminderPolicyOverride | Mapping[str, Any] | None
    ) -> ReminderPolicySpec:
        """This policy with the fields ``override`` sets replaced (``window`` as a whole).

        ``override`` is a :class:`ReminderPolicyOverride` or a mapping it validates;
        a mapping with anything wrong raises :class:`pydantic.ValidationError`.
        """
        if override is None:
            return self
        if not isinstance(override, ReminderPolicyOverride):
            override = ReminderPolicyOverride.model_validate(override)
        return ReminderPolicySpec.model_validate({**dict(self), **override.changes()})

    def own_problems(self) -> list[tuple[str, str]]:
        return _offset_problems(self.offsets_days) + _prefixed("window", self.window.own_problems())


class ReminderPolicyOverride(_Spec):
    """Any subset of a :class:`ReminderPolicySpec`'s fields: a campaign's ``reminders:``
    block, or a unit's own changes. A field left out (or null) keeps the policy's value."""

    offsets_days: Offsets | None = None
    window: ReminderWindow | None = None
    skip_holidays: StrictBool | None = None
    digest_days_before: DigestDays | None = None
    digest_days_after: DigestDays | None = None

    def changes(self) -> dict[str, Any]:
        """The fields this override sets, by name."""
        return {name: value for name, value in self if value is not None}

    def own_problems(self) -> list[tuple[str, str]]:
        problems = _offset_problems(self.offsets_days or ())
        if self.window is not None:
            problems += _prefixed("window", self.window.own_problems())
        return problems


class HolidaySpec(_Spec):
    """One public holiday (day off) in ``holidays.yaml``: one ``date``, or a run of days
    ``from`` … ``to`` (both included), with its name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    date: LocalDate | None = None
    from_: LocalDate | None = Field(default=None, alias="from")
    to: LocalDate | None = None
    name: TitleText

    @property
    def days(self) -> tuple[dt.date, ...]:
        """Every day of the holiday, in order."""
        first = self.date or self.from_
        last = self.date or self.to
        if first is None or last is None:
            return ()
        return tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))

    def own_problems(self) -> list[tuple[str, str]]:
        if self.date is not None:
            if self.from_ is not None or self.to is not None:
                field = "from" if self.from_ is not None else "to"
                return [(field, "write either date, or from and to, not both")]
            return []
        if self.from_ is None and self.to is None:
            return [("date", "required field is missing (or from and to, for a run of days)")]
        if self.from_ is None:
            return [("from", "required field is missing (to needs a from)")]
        if self.to is None:
            return [("to", "required field is missing (from needs a to)")]
        if self.to < self.from_:
            return [("to", f"{self.to} is before from ({self.from_})")]
        span = (self.to - self.from_).days + 1
        if span > HOLIDAY_SPAN_MAX:
            message = f"{span} days from {self.from_}; a break is at most {HOLIDAY_SPAN_MAX}"
            return [("to", f"{message}, check the dates")]
        return []


class HolidayListSpec(_Spec):
    """``holidays.yaml``: the public holidays, no day listed twice."""

    holidays: tuple[HolidaySpec, ...]

    def own_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        seen: dict[dt.date, int] = {}
        for index, holiday in enumerate(self.holidays):
            own = holiday.own_problems()
            problems += _prefixed(f"holidays[{index}]", own)
            if own:
                continue
            field = "date" if holiday.date is not None else "from"
            for day in holiday.days:
                if day in seen:
                    problems.append(
                        (f"holidays[{index}].{field}", f"{day} is also in holidays[{seen[day]}]")
                    )
                    break
                seen[day] = index
        return problems


class TermTopicSpec(_Spec):
    """The term-wide topic (chuyên đề toàn khóa) that the yearly campaigns belong to."""

    id: Id
    kind: Literal["term"]
    title: TitleText
    years: Annotated[StrictStr, StringConstraints(pattern=_YEARS_PATTERN)]
    issuer: NameStr
    issuer_en: NameStr
    document: NameStr
    document_en: NameStr
    source: Text
    topic: Text
    topic_en: Text
    lessons: tuple[LessonSpec, ...] = ()

    @property
    def start_year(self) -> int:
        return int(self.years.split("-")[0])

    @property
    def end_year(self) -> int:
        return int(self.years.split("-")[1])

    def own_problems(self) -> list[tuple[str, str]]:
        problems = _duplicates(self.lessons, "key", "lessons", "lesson key")
        if self.start_year > self.end_year:
            problems.append(("years", f"{self.years!r} ends before it starts"))
        return problems


class CampaignSpec(_Spec):
    """A yearly campaign: the topic a unit studies that year, its lessons, pledge form and
    the deadlines its document gives (absent when the document gives none)."""

    id: Id
    kind: Literal["campaign"]
    year: Annotated[StrictInt, Field(ge=2000, le=2100)]
    term: Id
    issuer: NameStr
    issuer_en: NameStr
    document: NameStr
    document_en: NameStr
    source: Text
    topic: Text
    topic_en: Text
    deadlines: tuple[DeadlineSpec, ...] = ()
    reminders: ReminderPolicyOverride | None = None  # changes to reminders.yaml's policy
    lessons: Annotated[tuple[LessonSpec, ...], Field(min_length=1)]
    pledge_sections: Annotated[tuple[PledgeSectionSpec, ...], Field(min_length=1)]

    def deadline(self, name: str) -> DeadlineSpec | None:
        """The deadline called ``name``, or None when the document gives none."""
        return next((d for d in self.deadlines if d.name == name), None)

    def lesson(self, key: str) -> LessonSpec:
        for lesson in self.lessons:
            if lesson.key == key:
                return lesson
        raise KeyError(f"campaign {self.id!r} has no lesson {key!r}")

    def own_problems(self) -> list[tuple[str, str]]:
        problems = _duplicates(self.deadlines, "name", "deadlines", "deadline name")
        problems += _duplicates(self.lessons, "key", "lessons", "lesson key")
        problems += _duplicates(self.pledge_sections, "key", "pledge_sections", "section key")
        for index, deadline in enumerate(self.deadlines):
            if deadline.date.year not in (self.year, self.year + 1):
                problems.append(
                    (
                        f"deadlines[{index}].date",
                        f"{deadline.date.isoformat()} is outside the campaign year "
                        f"{self.year} (allowed: {self.year} or {self.year + 1})",
                    )
                )
        if self.reminders is not None:
            problems += _prefixed("reminders", self.reminders.own_problems())
        return problems


@dataclasses.dataclass(frozen=True, order=True)
class ContentProblem:
    """One thing wrong with the content: where (file relative to the content folder, and a
    dotted field such as ``deadlines[1].date`` or ``line 7``; may be empty) and what."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.file}: {self.field}: {self.message}"
        return f"{self.file}: {self.message}"


class ContentError(Exception):
    """The content folder does not load; ``problems`` says everything that is wrong."""

    def __init__(self, problems: Iterable[ContentProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} content problem(s):\n{lines}")


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Every valid campaign and term-wide topic of one content folder, the default reminder
    policy and the public holidays.

    ``campaigns`` is ordered by (year, id), ``terms`` by id, ``holiday_list`` as written.
    ``reminder_defaults`` is None only in a catalog with problems (``reminders.yaml``
    missing or broken); :func:`load_catalog` never returns one.
    """

    content_dir: Path
    campaigns: dict[str, CampaignSpec]
    terms: dict[str, TermTopicSpec]
    reminder_defaults: ReminderPolicySpec | None = None
    holiday_list: tuple[HolidaySpec, ...] = ()

    @property
    def default_reminder_policy(self) -> ReminderPolicySpec:
        """The policy of ``reminders.yaml``."""
        if self.reminder_defaults is None:
            raise LookupError(f"{REMINDERS_FILE} did not load; run `chuyende content check`")
        return self.reminder_defaults

    def reminder_policy(self, campaign_id: str) -> ReminderPolicySpec:
        """The default policy with the campaign's ``reminders:`` block applied; a unit's own
        changes go on top with :meth:`ReminderPolicySpec.merged`."""
        return self.default_reminder_policy.merged(self.campaign(campaign_id).reminders)

    @functools.cached_property
    def _holiday_by_day(self) -> dict[dt.date, HolidaySpec]:
        return {day: holiday for holiday in self.holiday_list for day in holiday.days}

    @functools.cached_property
    def holidays(self) -> frozenset[dt.date]:
        """Every day of every holiday in ``holidays.yaml`` (runs of days expanded)."""
        return frozenset(self._holiday_by_day)

    @functools.cached_property
    def holiday_years(self) -> frozenset[int]:
        """The years ``holidays.yaml`` lists holidays for (outside them, none are known)."""
        return frozenset(day.year for day in self.holidays)

    def holiday_name(self, day: dt.date, locale: str = "vi") -> str | None:
        """The name of the holiday on ``day`` in ``locale``, or None on an ordinary day."""
        if isinstance(day, dt.datetime):
            day = day.date()
        holiday = self._holiday_by_day.get(day)
        return holiday.name.get(locale) if holiday is not None else None

    def campaign(self, campaign_id: str) -> CampaignSpec:
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            known = ", ".join(self.campaigns) or "none"
            raise KeyError(
                f"unknown campaign {campaign_id!r}; shipped campaigns: {known}"
            ) from None

    def term(self, term_id: str) -> TermTopicSpec:
        try:
            return self.terms[term_id]
        except KeyError:
            known = ", ".join(self.terms) or "none"
            raise KeyError(f"unknown term {term_id!r}; known terms: {known}") from None


def default_content_dir() -> Path:
    """``$CHUYENDE_CONTENT_DIR`` if set, else the repository's ``content/`` folder."""
    configured = os.environ.get(CONTENT_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parent.parent / "content"


def load_catalog(content_dir: Path | None = None) -> Catalog:
    """Load and validate the campaigns, the reminder policy and the holidays; raise
    :class:`ContentError` if anything is wrong."""
    catalog, problems = collect_catalog(content_dir)
    if problems:
        raise ContentError(problems)
    return catalog


# --- loading -------------------------------------------------------------------------------


class _ContentLoader(yaml.SafeLoader):
    """Safe YAML that keeps dates as text (so pydantic reports a bad one at its field) and
    rejects a key written twice in one mapping (PyYAML would keep the last silently)."""


_ContentLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _ContentLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_ContentLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(file: str, exc: yaml.YAMLError) -> ContentProblem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}" if mark is not None else ""
    if mark is not None:
        problem = f"{problem} (column {mark.column + 1})"
    return ContentProblem(file, where, f"YAML syntax error: {problem}")


def _dotted(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_message(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling)"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return f"should be a mapping of fields, got {_short_repr(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"should be a list (lines starting with '- '), got {_short_repr(value)}"
    if kind == "string_type" and isinstance(value, bool | int | float):
        return f"should be text, got {_short_repr(value)}; put it in quotes"
    return f"{error['msg']}, got {_short_repr(value)}"


_S = TypeVar("_S", bound=_Spec)


def _read_mapping(path: Path, file: str) -> tuple[dict[Any, Any] | None, list[ContentProblem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [ContentProblem(file, "", f"not UTF-8 text ({exc.reason})")]
    try:
        data = yaml.load(text, Loader=_ContentLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(file, exc)]
    if not isinstance(data, dict):
        return None, [ContentProblem(file, "", "the file should be a mapping of fields")]
    return data, []


def _validate(model: type[_S], data: Any, file: str) -> tuple[_S | None, list[ContentProblem]]:
    """The spec (None if it does not validate) and every problem with it, each at its own
    field; a spec with consistency problems comes back with them."""
    try:
        spec = model.model_validate(data, context={_CONTEXT_DEFER: True})
    except ValidationError as exc:
        return None, [
            ContentProblem(file, _dotted(error["loc"]), _pydantic_message(error))
            for error in exc.errors(include_url=False)
        ]
    return spec, [ContentProblem(file, field, message) for field, message in spec.own_problems()]


def _load_file(path: Path, file: str) -> tuple[CampaignSpec | TermTopicSpec | None, list]:
    data, problems = _read_mapping(path, file)
    if data is None:
        return None, problems

    model: type[CampaignSpec | TermTopicSpec]
    kind = data.get("kind")
    if kind == "campaign":
        model = CampaignSpec
    elif kind == "term":
        model = TermTopicSpec
    elif kind is None:
        return None, [ContentProblem(file, "kind", "missing; write kind: campaign or kind: term")]
    else:
        message = f"unknown kind {_short_repr(kind)}; write campaign or term"
        return None, [ContentProblem(file, "kind", message)]

    spec, problems = _validate(model, data, file)
    if spec is not None and spec.id != path.stem:
        message = f"{spec.id!r} should equal the file name {path.stem!r}"
        problems.append(ContentProblem(file, "id", message))
    return (None if problems else spec), problems


def _load_single(
    content_dir: Path, file: str, model: type[_S], what: str
) -> tuple[_S | None, list[ContentProblem]]:
    """One of the top-level files (``reminders.yaml``, ``holidays.yaml``), which must exist."""
    path = content_dir / file
    if not path.is_file():
        return None, [ContentProblem(file, "", f"missing: {what} (see content/README.md)")]
    data, problems = _read_mapping(path, file)
    if data is None:
        return None, problems
    spec, problems = _validate(model, data, file)
    return (None if problems else spec), problems


def collect_catalog(content_dir: Path | None = None) -> tuple[Catalog, list[ContentProblem]]:
    """Load what is valid and list every problem (the catalog holds only valid files)."""
    content_dir = Path(content_dir) if content_dir is not None else default_content_dir()
    campaigns_dir = content_dir / CAMPAIGNS_DIR
    problems: list[ContentProblem] = []
    specs: list[tuple[str, CampaignSpec | TermTopicSpec]] = []
    broken: set[str] = set()  # ids of files that exist but did not load

    if not campaigns_dir.is_dir():
        problems.append(ContentProblem(CAMPAIGNS_DIR, "", "missing folder of campaign files"))
        paths: list[Path] = []
    else:
        paths = sorted(p for p in campaigns_dir.iterdir() if not p.name.startswith("."))
    for path in paths:
        file = path.relative_to(content_dir).as_posix()
        if path.suffix == ".yml":
            problems.append(ContentProblem(file, "", "rename it to .yaml, .yml files are ignored"))
        if path.suffix != ".yaml" or not path.is_file():
            continue
        spec, file_problems = _load_file(path, file)
        problems += file_problems
        if spec is None:
            broken.add(path.stem)
        else:
            specs.append((file, spec))
    if campaigns_dir.is_dir() and not any(path.suffix == ".yaml" for path in paths):
        problems.append(ContentProblem(CAMPAIGNS_DIR, "", "no campaign files (*.yaml)"))

    terms = {spec.id: spec for _, spec in specs if isinstance(spec, TermTopicSpec)}
    campaigns: dict[str, CampaignSpec] = {}
    for file, spec in specs:
        if not isinstance(spec, CampaignSpec):
            continue
        term = terms.get(spec.term)
        if term is None:
            if spec.term not in broken:  # a broken term file is reported on its own
                known = ", ".join(sorted(terms)) or "none"
                problems.append(
                    ContentProblem(file, "term", f"unknown term {spec.term!r}; known: {known}")
                )
            continue
        if not term.start_year <= spec.year <= term.end_year:
            message = f"{spec.year} is outside term {term.id} ({term.years})"
            problems.append(ContentProblem(file, "year", message))
            continue
        campaigns[spec.id] = spec

    reminders, file_problems = _load_single(
        content_dir, REMINDERS_FILE, ReminderPolicySpec, "the default reminder policy"
    )
    problems += file_problems
    holidays, file_problems = _load_single(
        content_dir, HOLIDAYS_FILE, HolidayListSpec, "the list of public holidays"
    )
    problems += file_problems

    ordered = dict(sorted(campaigns.items(), key=lambda item: (item[1].year, item[0])))
    catalog = Catalog(
        content_dir=content_dir,
        campaigns=ordered,
        terms=dict(sorted(terms.items())),
        reminder_defaults=reminders,
        holiday_list=holidays.holidays if holidays is not None else (),
    )
    return catalog, problems
