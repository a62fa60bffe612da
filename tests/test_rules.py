"""The one-place rules: deadlines, Vietnamese text, phone numbers, message splitting."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from bot.clock import Clock
from bot.models import Deadline, OwedBy
from bot.services import deadlines
from bot.settings import Settings
from bot.telegram_html import MAX_MESSAGE_LENGTH, split_message, visible_length
from bot.text import given_name_sort_key, mask_phone, nfc, normalize_phone, search_key

TZ = Settings(_env_file=None).tz


def _deadline(due: date, inclusive: bool) -> Deadline:
    return Deadline(campaign_id=1, name="pledge", title_vi="", title_en="", due_date=due,
                    inclusive=inclusive, owed_by=OwedBy.member)


def test_truoc_ngay_10_4_ends_on_9_4_local_time():
    before_10_4 = _deadline(date(2024, 4, 10), inclusive=False)
    assert deadlines.last_day(before_10_4) == date(2024, 4, 9)
    # 23:59 on 9/4 in Vietnam is 16:59 UTC: still on time.
    assert deadlines.is_on_time(before_10_4, datetime(2024, 4, 9, 16, 59, tzinfo=UTC), TZ)
    # 00:01 on 10/4 in Vietnam is still 9/4 in UTC, but it is late.
    assert not deadlines.is_on_time(before_10_4, datetime(2024, 4, 9, 17, 1, tzinfo=UTC), TZ)


def test_cham_nhat_ngay_6_5_counts_6_5_itself():
    by_6_5 = _deadline(date(2024, 5, 6), inclusive=True)
    assert deadlines.last_day(by_6_5) == date(2024, 5, 6)
    assert deadlines.days_left(by_6_5, date(2024, 5, 6)) == 0
    assert deadlines.days_left(by_6_5, date(2024, 5, 7)) == -1
    assert deadlines.is_ahead(by_6_5, date(2024, 5, 6))


def test_clock_starts_at_chuyende_now_and_runs_on():
    clock = Clock(TZ, start=datetime(2024, 4, 5, 8, 0))  # naive = Vietnam time
    assert clock.today() == date(2024, 4, 5)
    assert clock.local_now().hour == 8
    before = clock.now()
    clock.advance(__import__("datetime").timedelta(days=5))
    assert clock.today() == date(2024, 4, 10)
    assert clock.now() >= before


def test_settings_reads_chuyende_now(monkeypatch):
    monkeypatch.setenv("CHUYENDE_NOW", "2024-04-05T08:00:00+07:00")
    assert Settings(_env_file=None).now == datetime.fromisoformat("2024-04-05T08:00:00+07:00")


def test_phone_numbers_in_the_forms_people_and_excel_write_them():
    for raw in ("0912345678", "+84912345678", "84912345678", "912345678", 912345678,
                "091 234 5678", "+84 (91) 234-5678"):
        assert normalize_phone(raw) == "+84912345678", raw
    for bad in ("", "12345", "0123456789", "abc", None, "+8491234567890"):
        assert normalize_phone(bad) is None, bad
    assert mask_phone("+84912345678").endswith("678")
    assert "912345" not in mask_phone("+84912345678")


@given(st.from_regex(r"[35789][0-9]{8}", fullmatch=True))
def test_every_mobile_number_normalises_from_each_form(national):
    expected = "+84" + national
    assert normalize_phone("0" + national) == expected
    assert normalize_phone("+84" + national) == expected
    assert normalize_phone(int(national)) == expected


def test_search_ignores_diacritics_and_nfd():
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Đào")
    assert nfc(decomposed) == "Nguyễn Thị Đào"
    assert search_key(decomposed) == search_key("nguyen thi dao") == "nguyen thi dao"


def test_names_sort_by_given_name():
    names = ["Trần Văn Bình", "Nguyễn Thị An", "Lê Văn Đức", "Phạm Thị Anh"]
    assert sorted(names, key=given_name_sort_key) == [
        "Nguyễn Thị An", "Phạm Thị Anh", "Trần Văn Bình", "Lê Văn Đức",
    ]


_TAGS = re.compile(r"<(/?)([a-z-]+)[^>]*>")


def _balanced(part: str) -> bool:
    stack = []
    for match in _TAGS.finditer(part):
        if match.group(1):
            if not stack or stack.pop() != match.group(2):
                return False
        else:
            stack.append(match.group(2))
    return not stack


@given(
    st.lists(
        st.tuples(st.sampled_from(["", "b", "i", "code"]),
                  st.text(alphabet="aăâ bcdđ eêg&<>\n😀", min_size=0, max_size=900)),
        min_size=1, max_size=30,
    )
)
def test_split_keeps_every_part_short_and_balanced(chunks):
    from html import escape

    text = "".join(f"<{tag}>{escape(body)}</{tag}>" if tag else escape(body)
                   for tag, body in chunks)
    parts = split_message(text)
    assert all(visible_length(part) <= MAX_MESSAGE_LENGTH for part in parts)
    assert all(_balanced(part) for part in parts)
    # Nothing is lost but the white space at the cuts.
    squash = lambda s: re.sub(r"\s+", "", re.sub(r"<[^>]*>", "", s))  # noqa: E731
    assert squash("".join(parts)) == squash(text)
