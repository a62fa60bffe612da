"""Vietnamese text rules: NFC storage, diacritic-free search keys, phone numbers."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def nfc(text: str) -> str:
    """Store text NFC: phones and Excel often hand us NFD (decomposed) Vietnamese."""
    return unicodedata.normalize("NFC", text)


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)


def clean_name(text: str) -> str:
    """NFC, zero-width characters dropped, runs of spaces folded."""
    return _SPACES.sub(" ", nfc(text).translate(_INVISIBLE)).strip()


def search_key(text: str) -> str:
    """'Nguyễn Thị Đào' -> 'nguyen thi dao': search ignores diacritics."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped).strip().lower()


def given_name_sort_key(full_name: str) -> tuple[str, str]:
    """Vietnamese names sort by the given name (the last word), then the whole name."""
    key = search_key(full_name)
    return (key.rsplit(" ", 1)[-1], key)


def normalize_phone(raw: str | int | None) -> str | None:
    """Normalise a Vietnamese mobile number to +84XXXXXXXXX, or None if it is not one.

    Accepts 0912345678, +84 912 345 678, 84912345678 and 912345678 (Excel stored the number
    as a number and dropped the leading zero).
    """
    if raw is None:
        return None
    digits = re.sub(r"[^0-9+]", "", str(raw).strip())
    if digits.startswith("+"):
        digits = digits[1:]
        if not digits.startswith("84"):
            return "+" + digits if 8 <= len(digits) <= 15 else None
    if digits.startswith("84") and len(digits) == 11:
        national = digits[2:]
    elif digits.startswith("0") and len(digits) == 10:
        national = digits[1:]
    elif len(digits) == 9 and not digits.startswith("0"):
        national = digits
    else:
        return None
    if not national.isdigit() or national[0] not in "35789":
        return None
    return "+84" + national


def mask_phone(phone: str | None) -> str:
    """Show only the last three digits, for screens and logs."""
    if not phone:
        return ""
    return "•" * max(len(phone) - 3, 0) + phone[-3:]
