"""The shipped content, and what `chuyende content check` says about broken copies of it."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from bot.catalog import (
    CampaignSpec,
    ContentError,
    ContentProblem,
    LocalizedText,
    ReminderPolicyOverride,
    ReminderPolicySpec,
    ReminderWindow,
    collect_catalog,
    default_content_dir,
    load_catalog,
)
from bot.cli import app
from bot.content_check import check_content

SHIPPED = Path(__file__).resolve().parent.parent / "content"

BINH_THUAN_TOPIC = (
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh về thực hành dân chủ và "
    "tăng cường pháp chế, bảo đảm kỷ cương xã hội"
)
TERM_XIII_TOPIC = (
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh về ý chí tự lực, tự cường "
    "và khát vọng phát triển đất nước phồn vinh, hạnh phúc"
)
LONG_BIEN_TOPIC = (
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh về chăm lo đời sống Nhân dân"
)
LAI_CHAU_TOPIC = (
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh về thực hiện trách nhiệm "
    "nêu gương; đẩy mạnh đổi mới sáng tạo; khơi dậy ý chí tự lực, tự cường, khát vọng xây dựng "
    "cuộc sống ấm no, hạnh phúc, đưa Lai Châu phát triển nhanh và bền vững"
)


# --- the shipped content ----------------------------------------------------------------


def test_shipped_campaigns_have_no_problems() -> None:
    _, problems = collect_catalog(SHIPPED)
    assert [str(problem) for problem in problems] == []


def test_shipped_content_passes_the_check() -> None:
    # Campaigns and templates together: what `chuyende content check` runs.
    assert [str(problem) for problem in check_content(SHIPPED)] == []


def test_default_content_dir_is_the_repository_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHUYENDE_CONTENT_DIR", raising=False)
    assert default_content_dir() == SHIPPED


def test_default_content_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHUYENDE_CONTENT_DIR", str(tmp_path))
    assert default_content_dir() == tmp_path


def test_shipped_catalog_loads() -> None:
    catalog = load_catalog(SHIPPED)
    assert list(catalog.campaigns) == ["lai-chau-2022", "long-bien-2023", "binh-thuan-2024"]
    assert list(catalog.terms) == ["term-xiii"]
    term = catalog.term("term-xiii")
    assert term.topic == TERM_XIII_TOPIC
    assert (term.start_year, term.end_year) == (2021, 2025)
    for campaign in catalog.campaigns.values():
        assert campaign.term == "term-xiii"
        assert 4 <= len(campaign.lessons) <= 7
        assert [s.key for s in campaign.pledge_sections] == ["thought", "ethics", "style", "deeds"]
    assert catalog.campaign("long-bien-2023").topic == LONG_BIEN_TOPIC
    assert catalog.campaign("lai-chau-2022").topic == LAI_CHAU_TOPIC


def test_unknown_campaign_is_a_clear_key_error() -> None:
    catalog = load_catalog(SHIPPED)
    with pytest.raises(KeyError, match=r"unknown campaign 'ha-noi-2030'.*binh-thuan-2024"):
        catalog.campaign("ha-noi-2030")


def test_binh_thuan_2024_deadlines_follow_the_plan_wording() -> None:
    campaign = load_catalog(SHIPPED).campaign("binh-thuan-2024")
    assert campaign.year == 2024
    assert campaign.topic == BINH_THUAN_TOPIC
    assert campaign.issuer == "Đảng đoàn Liên đoàn Lao động tỉnh Bình Thuận"

    pledge = campaign.deadline("pledge")
    assert pledge is not None
    assert (pledge.date, pledge.inclusive) == (dt.date(2024, 4, 10), False)
    assert pledge.owed_by == "member"
    assert "trước ngày 10/4/2024" in pledge.source_text
    assert pledge.last_day == dt.date(2024, 4, 9)

    expected = {
        "study": (dt.date(2024, 3, 31), True, "unit", "Hoàn thành trong tháng 3/2024"),
        "study_report": (dt.date(2024, 5, 3), False, "unit", "trước ngày 03/5/2024"),
        "six_month_report": (dt.date(2024, 5, 6), True, "unit", "chậm nhất ngày 06/5/2024"),
        "annual_report": (dt.date(2024, 11, 11), True, "unit", "chậm nhất ngày 11/11/2024"),
    }
    for name, (date, inclusive, owed_by, words) in expected.items():
        deadline = campaign.deadline(name)
        assert deadline is not None, name
        assert (deadline.date, deadline.inclusive, deadline.owed_by) == (date, inclusive, owed_by)
        assert words in deadline.source_text
    assert [d.name for d in campaign.deadlines] == ["study", "pledge", *list(expected)[1:]]


def test_documents_without_dates_get_no_invented_deadlines() -> None:
    catalog = load_catalog(SHIPPED)
    assert catalog.campaign("long-bien-2023").deadlines == ()
    lai_chau = catalog.campaign("lai-chau-2022")
    assert [d.name for d in lai_chau.deadlines] == ["study"]
    study = lai_chau.deadline("study")
    assert study is not None
    assert (study.date, study.inclusive, study.owed_by) == (dt.date(2022, 3, 31), True, "unit")
    assert "Quý I/2022" in study.source_text
    assert lai_chau.deadline("pledge") is None


def test_shipped_texts_are_nfc_plain_and_short_enough() -> None:
    catalog = load_catalog(SHIPPED)
    specs = [*catalog.campaigns.values(), *catalog.terms.values()]
    for spec in specs:
        for lesson in spec.lessons:
            assert len(lesson.body.vi) <= 900, (spec.id, lesson.key)
            for text in (lesson.title.vi, lesson.title.en, lesson.body.vi, lesson.body.en):
                assert unicodedata.is_normalized("NFC", text)
                assert "<" not in text


# --- broken copies ------------------------------------------------------------------------


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A copy of the shipped campaigns, reminder policy and holidays (without templates)
    to break."""
    root = tmp_path / "content"
    shutil.copytree(SHIPPED / "campaigns", root / "campaigns")
    for name in ("reminders.yaml", "holidays.yaml"):
        shutil.copy(SHIPPED / name, root / name)
    return root


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def problems_of(root: Path) -> list[ContentProblem]:
    problems = check_content(root)
    assert problems, "expected at least one problem"
    return problems


def only(problems: list[ContentProblem]) -> ContentProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


BT = "campaigns/binh-thuan-2024.yaml"


def test_copy_without_templates_is_fine(content: Path) -> None:
    assert check_content(content) == []


def test_yaml_syntax_error_names_file_and_line(content: Path) -> None:
    path = content / BT
    edit(path, "year: 2024\n", "year: 2024\n  bad: [unclosed\n")
    problem = only(problems_of(content))
    assert problem.file == BT
    assert problem.field.startswith("line ")
    assert "YAML syntax error" in problem.message
    assert str(problem).startswith(f"{BT}: line ")


def test_invalid_date(content: Path) -> None:
    edit(content / BT, "date: 2024-04-10", "date: 2024-02-30")
    problem = only(problems_of(content))
    assert str(problem) == (
        f"{BT}: deadlines[1].date: invalid date '2024-02-30', write it as YYYY-MM-DD"
    )


def test_date_in_vietnamese_order_is_refused(content: Path) -> None:
    edit(content / BT, "date: 2024-04-10", "date: 10/4/2024")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].date")


def test_unknown_owed_by(content: Path) -> None:
    edit(content / BT, "owed_by: member", "owed_by: members")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].owed_by")
    assert "'member'" in problem.message and "'members'" in problem.message


def test_missing_vi_text(content: Path) -> None:
    edit(content / BT, '      vi: "Nộp bản đăng ký học tập và làm theo"\n', "")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].title.vi")
    assert "missing" in problem.message


def test_empty_en_text(content: Path) -> None:
    edit(content / BT, 'en: "Hand in your personal pledge"', 'en: "  "')
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].title.en")


def test_unknown_term(content: Path) -> None:
    edit(content / BT, "term: term-xiii", "term: term-xiv")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "term")
    assert "term-xiv" in problem.message


def test_broken_term_file_is_reported_once(content: Path) -> None:
    edit(content / "campaigns/term-xiii.yaml", "kind: term", "kind: terms")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == ("campaigns/term-xiii.yaml", "kind")


def test_duplicate_deadline_name(content: Path) -> None:
    edit(content / BT, "name: study_report", "name: pledge")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[2].name")
    assert "duplicate" in problem.message and "deadlines[1]" in problem.message


def test_duplicate_pledge_section_key(content: Path) -> None:
    edit(content / BT, "key: ethics", "key: thought")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "pledge_sections[1].key")


def test_misspelt_field_is_caught(content: Path) -> None:
    edit(content / BT, "owed_by: member", "owed_by: member\n    inclusve: true")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].inclusve")
    assert "unknown field" in problem.message


def test_key_written_twice_is_caught(content: Path) -> None:
    edit(content / BT, "year: 2024\n", "year: 2024\nyear: 2025\n")
    problem = only(problems_of(content))
    assert problem.file == BT
    assert "'year' twice" in problem.message


def test_deadline_outside_campaign_year(content: Path) -> None:
    edit(content / BT, "date: 2024-11-11", "date: 2026-11-11")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[4].date")


def test_id_must_match_file_name(content: Path) -> None:
    edit(content / BT, "id: binh-thuan-2024", "id: binh-thuan")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "id")


def test_html_in_lesson_body(content: Path) -> None:
    edit(content / BT, "Chuyên đề năm 2024 của tỉnh", "<b>Chuyên đề</b> năm 2024 của tỉnh")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "lessons[0].body.vi")
    assert "plain text" in problem.message


def test_lesson_body_too_long(content: Path) -> None:
    edit(content / BT, "Chuyên đề năm 2024 của tỉnh", "Rất dài. " * 200)
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "lessons[0].body.vi")


def test_yes_no_without_quotes_is_explained(content: Path) -> None:
    edit(content / BT, 'en: "Hand in your personal pledge"', "en: no")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "deadlines[1].title.en")
    assert "quotes" in problem.message


def test_load_catalog_raises_content_error_with_every_problem(content: Path) -> None:
    edit(content / BT, "owed_by: member", "owed_by: nobody")
    edit(content / "campaigns/long-bien-2023.yaml", "year: 2023", "year: 2031")
    with pytest.raises(ContentError) as raised:
        load_catalog(content)
    assert {p.file for p in raised.value.problems} == {BT, "campaigns/long-bien-2023.yaml"}
    assert "deadlines[1].owed_by" in str(raised.value)


def test_missing_campaigns_folder(tmp_path: Path) -> None:
    problems = problems_of(tmp_path)
    assert [p.file for p in problems] == ["campaigns", "reminders.yaml", "holidays.yaml"]


# --- templates ----------------------------------------------------------------------------


def write(root: Path, relative: str, text: str) -> None:
    path = root / "templates" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def templated(content: Path) -> Path:
    write(content, "vi/pledge/saved.html", "✅ <b>Đã lưu</b> bản đăng ký của {{ name }}.\n")
    write(content, "en/pledge/saved.html", "✅ <b>Saved</b> {{ name }}'s pledge.\n")
    write(content, "vi/topic/lesson.html", "<b>{{ title }}</b>\n\n{{ body }}\n")
    write(content, "en/topic/lesson.html", "<b>{{ title }}</b>\n\n{{ body }}\n")
    return content


def test_good_templates_pass(templated: Path) -> None:
    # lesson.html is the same in both locales, but it has no words of its own to translate.
    assert check_content(templated) == []


def test_en_template_copied_from_vi(templated: Path) -> None:
    write(templated, "en/pledge/saved.html", "✅ <b>Đã lưu</b>  bản đăng ký của {{ name }}.")
    problem = only(problems_of(templated))
    assert str(problem) == "templates/en/pledge/saved.html: is a copy of its vi/ twin, translate it"


def test_template_without_twin(templated: Path) -> None:
    write(templated, "vi/help.html", "Trợ giúp")
    problem = only(problems_of(templated))
    assert problem.file == "templates/vi/help.html"
    assert "templates/en/help.html" in problem.message


def test_template_with_jinja_syntax_error(templated: Path) -> None:
    write(templated, "en/pledge/saved.html", "✅ Saved\n{% if name %}{{ name }}\n")
    problem = only(problems_of(templated))
    assert (problem.file, problem.field) == ("templates/en/pledge/saved.html", "line 2")
    assert "Jinja syntax error" in problem.message


def test_template_with_div(templated: Path) -> None:
    write(templated, "vi/pledge/saved.html", "✅ Đã lưu\n<div>{{ name }}</div>\n")
    problems = problems_of(templated)
    assert {(p.file, p.field) for p in problems} == {("templates/vi/pledge/saved.html", "line 2")}
    assert "<div>" in problems[0].message


def test_tags_inside_jinja_expressions_are_not_literal_html(templated: Path) -> None:
    write(templated, "vi/pledge/saved.html", "{{ '<div>' if x }}{# <p> #}<i>Đã lưu</i>&amp;")
    assert check_content(templated) == []


def test_unsupported_html_entity(templated: Path) -> None:
    write(templated, "en/pledge/saved.html", "Saved&nbsp;{{ name }}")
    problem = only(problems_of(templated))
    assert (problem.file, problem.field) == ("templates/en/pledge/saved.html", "line 1")
    assert "&nbsp;" in problem.message


# --- properties ---------------------------------------------------------------------------


vietnamese = st.text(
    alphabet=st.sampled_from("aăâeêioôơuưyđAĂÂĐ áàảãạấầẩẫậếềểễệốồổỗộớờởỡợứừửữự"),
    min_size=1,
    max_size=40,
).filter(str.strip)


@given(vietnamese)
def test_texts_are_stored_nfc(text: str) -> None:
    decomposed = unicodedata.normalize("NFD", text)
    stored = LocalizedText(vi=decomposed, en=decomposed)
    assert stored.vi == unicodedata.normalize("NFC", text).strip()
    assert unicodedata.is_normalized("NFC", stored.en)


@functools.cache
def binh_thuan_data() -> dict:
    return load_catalog(SHIPPED).campaign("binh-thuan-2024").model_dump(mode="json")


@given(st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2025, 12, 31)), st.booleans())
def test_a_deadline_date_round_trips_and_last_day_follows_inclusive(
    date: dt.date, inclusive: bool
) -> None:
    data = copy.deepcopy(binh_thuan_data())
    data["deadlines"][1]["date"] = date.isoformat()
    data["deadlines"][1]["inclusive"] = inclusive
    deadline = CampaignSpec.model_validate(data).deadlines[1]
    assert deadline.date == date
    assert deadline.last_day == (date if inclusive else date - dt.timedelta(days=1))


# --- reminder policy and holidays ---------------------------------------------------------


REMINDERS = "reminders.yaml"
HOLIDAYS = "holidays.yaml"


def test_shipped_reminder_policy() -> None:
    policy = load_catalog(SHIPPED).default_reminder_policy
    assert policy.offsets_days == (7, 3, 1, 0)
    assert (policy.window.start, policy.window.end) == (dt.time(7, 30), dt.time(20, 30))
    assert policy.skip_holidays is True
    assert (policy.digest_days_before, policy.digest_days_after) == (3, 1)
    assert policy.window.allows(dt.time(7, 30)) and policy.window.allows(dt.time(20, 29))
    assert not policy.window.allows(dt.time(7, 29)) and not policy.window.allows(dt.time(20, 30))


def test_shipped_campaigns_keep_the_default_policy() -> None:
    # No seed document says anything about reminders, so no campaign overrides them.
    catalog = load_catalog(SHIPPED)
    for campaign_id, campaign in catalog.campaigns.items():
        assert campaign.reminders is None
        assert catalog.reminder_policy(campaign_id) == catalog.default_reminder_policy


def test_shipped_holidays() -> None:
    catalog = load_catalog(SHIPPED)
    assert dt.date(2024, 2, 10) in catalog.holidays  # Tết Giáp Thìn
    assert dt.date(2024, 4, 30) in catalog.holidays
    assert dt.date(2024, 4, 5) not in catalog.holidays
    assert dt.date(2022, 4, 11) in catalog.holidays  # Giỗ Tổ 2022 fell on a Sunday
    assert dt.date(2024, 4, 29) not in catalog.holidays  # swapped for a Saturday, left out
    assert catalog.holiday_name(dt.date(2024, 2, 10), "vi") == "Tết Nguyên đán Giáp Thìn"
    assert catalog.holiday_name(dt.date(2024, 2, 10), "en") == "Lunar New Year (Tết)"
    assert catalog.holiday_name(dt.date(2024, 4, 18), "vi") == "Giỗ Tổ Hùng Vương"
    assert catalog.holiday_name(dt.date(2024, 4, 5), "vi") is None
    assert catalog.holiday_years == {2022, 2023, 2024, 2025}
    for year in (2022, 2023, 2024, 2025):
        assert dt.date(year, 1, 1) in catalog.holidays
        assert {dt.date(year, 4, 30), dt.date(year, 5, 1), dt.date(year, 9, 2)} <= catalog.holidays
    tet_2025 = {
        day for day in catalog.holidays if dt.date(2025, 1, 20) <= day <= dt.date(2025, 2, 9)
    }
    assert (min(tet_2025), max(tet_2025), len(tet_2025)) == (
        dt.date(2025, 1, 25),
        dt.date(2025, 2, 2),
        9,
    )


BT_REMINDERS = """reminders:
  offsets_days: [1, 5]
  window: {start: "08:00", end: "17:00"}
lessons:
"""


def test_campaign_reminders_block_overrides_the_default(content: Path) -> None:
    edit(content / BT, "\nlessons:\n", "\n" + BT_REMINDERS)
    catalog = load_catalog(content)
    policy = catalog.reminder_policy("binh-thuan-2024")
    assert policy.offsets_days == (5, 1)  # sorted, the earliest reminder first
    assert policy.window == ReminderWindow(start=dt.time(8), end=dt.time(17))
    assert policy.skip_holidays is True  # the rest comes from reminders.yaml
    assert (policy.digest_days_before, policy.digest_days_after) == (3, 1)
    assert catalog.reminder_policy("long-bien-2023") == catalog.default_reminder_policy


def test_a_units_override_merges_on_top_and_is_validated() -> None:
    catalog = load_catalog(SHIPPED)
    base = catalog.reminder_policy("binh-thuan-2024")
    merged = base.merged({"skip_holidays": False, "digest_days_after": 2})
    assert (merged.skip_holidays, merged.digest_days_after) == (False, 2)
    assert (merged.offsets_days, merged.window) == (base.offsets_days, base.window)
    assert base.merged(None) is base
    assert base.merged(ReminderPolicyOverride()) == base
    with pytest.raises(ValidationError):
        base.merged({"offsets_days": [3, 3]})
    with pytest.raises(ValidationError):
        base.merged({"window": {"start": "21:00", "end": "08:00"}})
    with pytest.raises(ValidationError):
        base.merged({"quiet": True})


def test_reminder_policy_json_round_trip() -> None:
    catalog = load_catalog(SHIPPED)
    for policy in (
        catalog.default_reminder_policy,
        catalog.default_reminder_policy.merged({"offsets_days": [0, 14], "skip_holidays": False}),
    ):
        stored = json.loads(json.dumps(policy.model_dump(mode="json")))
        assert stored["window"] == {"start": "07:30", "end": "20:30"}
        assert ReminderPolicySpec.model_validate(stored) == policy


@given(
    st.sets(st.integers(min_value=0, max_value=60), max_size=6),
    st.integers(min_value=0, max_value=24 * 60 - 2),
    st.integers(min_value=1, max_value=24 * 60 - 1),
    st.booleans(),
)
def test_any_valid_policy_round_trips_through_json(
    offsets: set[int], start: int, length: int, skip: bool
) -> None:
    end = min(start + length, 24 * 60 - 1)
    policy = ReminderPolicySpec(
        offsets_days=tuple(offsets),
        window=ReminderWindow(
            start=dt.time(start // 60, start % 60), end=dt.time(end // 60, end % 60)
        ),
        skip_holidays=skip,
        digest_days_before=3,
        digest_days_after=1,
    )
    assert policy.offsets_days == tuple(sorted(offsets, reverse=True))
    dumped = json.dumps(policy.model_dump(mode="json"))
    assert ReminderPolicySpec.model_validate(json.loads(dumped)) == policy
    assert ReminderPolicySpec.model_validate_json(dumped) == policy


def test_policy_with_a_bad_time(content: Path) -> None:
    edit(content / REMINDERS, 'start: "07:30"', 'start: "7h30"')
    problem = only(problems_of(content))
    assert str(problem) == f"{REMINDERS}: window.start: invalid time '7h30', write it as HH:MM"


def test_policy_with_a_time_yaml_reads_as_a_number(content: Path) -> None:
    edit(content / REMINDERS, 'start: "07:30"', "start: 7:30")  # YAML 1.1: base 60, 450
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "window.start")
    assert 'write it as "07:30"' in problem.message


def test_policy_window_ending_before_it_starts(content: Path) -> None:
    edit(content / REMINDERS, 'end: "20:30"', 'end: "06:00"')
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "window.end")
    assert "not after start 07:30" in problem.message


def test_policy_with_a_duplicate_offset(content: Path) -> None:
    edit(content / REMINDERS, "[7, 3, 1, 0]", "[7, 3, 3, 0]")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "offsets_days[2]")
    assert problem.message.startswith("duplicate 3")


def test_policy_with_a_negative_offset(content: Path) -> None:
    edit(content / REMINDERS, "[7, 3, 1, 0]", "[7, 3, 1, -1]")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "offsets_days[3]")


def test_policy_with_an_unknown_field(content: Path) -> None:
    edit(content / REMINDERS, "skip_holidays: true", "skip_holidays: true\nquiet_sundays: true")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "quiet_sundays")
    assert "unknown field" in problem.message


def test_policy_with_a_digest_day_of_zero(content: Path) -> None:
    edit(content / REMINDERS, "digest_days_after: 1", "digest_days_after: 0")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (REMINDERS, "digest_days_after")


def test_campaign_reminders_block_with_a_duplicate_offset(content: Path) -> None:
    edit(content / BT, "\nlessons:\n", "\n" + BT_REMINDERS.replace("[1, 5]", "[5, 3, 3]"))
    problem = only(problems_of(content))
    assert str(problem) == f"{BT}: reminders.offsets_days[2]: duplicate 3 (also offsets_days[1])"


def test_campaign_reminders_block_with_bad_window_and_unknown_field(content: Path) -> None:
    block = BT_REMINDERS.replace('end: "17:00"', 'end: "08:00"').replace(
        "lessons:", "  skip_holiday: false\nlessons:"
    )
    edit(content / BT, "\nlessons:\n", "\n" + block)
    problems = problems_of(content)
    assert {(p.file, p.field) for p in problems} == {
        (BT, "reminders.skip_holiday"),
    }
    # The unknown field stops validation first; fixed, the window is reported.
    edit(content / BT, "  skip_holiday: false\n", "")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (BT, "reminders.window.end")


def test_holiday_range_ending_before_it_starts(content: Path) -> None:
    edit(content / HOLIDAYS, "to: 2022-02-06", "to: 2022-01-06")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (HOLIDAYS, "holidays[2].to")
    assert "before from" in problem.message


def test_holiday_with_an_invalid_date(content: Path) -> None:
    edit(content / HOLIDAYS, "date: 2024-04-18", "date: 2024-04-31")
    problem = only(problems_of(content))
    assert str(problem) == (
        f"{HOLIDAYS}: holidays[20].date: invalid date '2024-04-31', write it as YYYY-MM-DD"
    )


def test_holiday_with_both_date_and_range(content: Path) -> None:
    edit(content / HOLIDAYS, "  - date: 2024-04-18\n", "  - date: 2024-04-18\n    to: 2024-04-19\n")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (HOLIDAYS, "holidays[20].to")


def test_holiday_listed_twice(content: Path) -> None:
    edit(content / HOLIDAYS, "date: 2024-04-18", "date: 2024-02-10")
    problem = only(problems_of(content))
    assert (problem.file, problem.field) == (HOLIDAYS, "holidays[20].date")
    assert "2024-02-10 is also in holidays[19]" in problem.message


def test_holiday_without_an_english_name(content: Path) -> None:
    edit(content / HOLIDAYS, 'en: "Reunification Day"}', 'en: ""}', count=4)
    problems = problems_of(content)
    assert {p.field for p in problems} == {f"holidays[{i}].name.en" for i in (5, 13, 21, 27)}


def test_missing_policy_and_holiday_files(content: Path) -> None:
    (content / REMINDERS).unlink()
    (content / HOLIDAYS).unlink()
    problems = problems_of(content)
    assert [(p.file, p.field) for p in problems] == [(REMINDERS, ""), (HOLIDAYS, "")]
    assert "missing" in problems[0].message
    catalog, _ = collect_catalog(content)
    assert catalog.holidays == frozenset()
    with pytest.raises(LookupError, match=r"reminders\.yaml"):
        _ = catalog.default_reminder_policy
    with pytest.raises(ContentError):
        load_catalog(content)


def test_content_check_command_on_a_broken_policy(tmp_path: Path) -> None:
    broken = tmp_path / "content"
    shutil.copytree(SHIPPED, broken)
    edit(broken / REMINDERS, 'start: "07:30"', 'start: "7h30"')
    edit(broken / HOLIDAYS, "to: 2022-02-06", "to: 2022-01-06")
    result = CliRunner().invoke(app, ["content", "check", str(broken)])
    assert result.exit_code == 1
    assert f"{REMINDERS}: window.start: invalid time '7h30'" in result.output
    assert f"{HOLIDAYS}: holidays[2].to:" in result.output
