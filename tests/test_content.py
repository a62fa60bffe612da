"""The shipped content, and what `chuyende content check` says about broken copies of it."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import shutil
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import (
    CampaignSpec,
    ContentError,
    ContentProblem,
    LocalizedText,
    collect_catalog,
    default_content_dir,
    load_catalog,
)
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
    """A copy of the shipped campaigns (without templates) to break."""
    root = tmp_path / "content"
    shutil.copytree(SHIPPED / "campaigns", root / "campaigns")
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
    problem = only(problems_of(tmp_path))
    assert problem.file == "campaigns"


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
