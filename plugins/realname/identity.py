"""Reading a name and a Chinese resident ID number from one chat message, checked before any provider call.

The ID number is checked as GB 11643-1999 defines it: 18 characters, 17 digits and a check character
(``0``–``9`` or ``X``) computed from the weights ``2^(17-i) mod 11``; the first two digits a province-level
code; digits 7–14 a real birth date between 1900-01-01 and today. Nothing here logs, stores or echoes what it
reads: a problem is reported by a catalogue key only.
"""

from __future__ import annotations

import datetime as dt
import re

from plugins.realname.providers import Identity

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
#: Province-level codes (GB/T 2260), plus 71 Taiwan, 81/82 Hong Kong/Macao, 83 Taiwan residence permits, 91 abroad.
# fmt: off
PROVINCES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43",
    "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82", "83", "91",
})
# fmt: on
NAME_MAX = 30
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])([0-9]{17}[0-9Xx])(?![0-9A-Za-z])")
_LONG_DIGITS = re.compile(r"[0-9]{6,}")
_SEPARATORS = " \t\r\n,，、;；:：/|"
_NAME = re.compile(r"[^\W\d_]+(?:[·•. -][^\W\d_]+)*")


class IdentityProblem(ValueError):
    """What is wrong with the message, as a catalogue key (never the values themselves)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def check_digit(first17: str) -> str:
    """The GB 11643 check character of the first 17 digits (exactly 17)."""
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def valid_id_number(number: str, *, today: dt.date | None = None) -> bool:
    """Whether ``number`` is a well-formed 18-character resident ID number (GB 11643: province, birth date,
    check character). A lower-case ``x`` is accepted."""
    number = number.upper()
    if len(number) != 18 or not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        return False
    if number[:2] not in PROVINCES:
        return False
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not dt.date(1900, 1, 1) <= born <= (today or dt.date.today()):
        return False
    return check_digit(number[:17]) == number[17]


def parse_identity(text: str) -> Identity:
    """The name and ID number of a message such as ``韩梅梅 11010519491231002X`` (either order, any common
    separator). Raises :class:`IdentityProblem` with ``realname.identity.no_id`` (no 18-character number),
    ``realname.identity.bad_id`` (not a valid ID number) or ``realname.identity.no_name``."""
    candidates = _CANDIDATE.findall(text)
    if len(candidates) != 1:
        raise IdentityProblem("realname.identity.no_id" if not candidates else "realname.identity.bad_id")
    number = candidates[0].upper()
    if not valid_id_number(number):
        raise IdentityProblem("realname.identity.bad_id")
    rest = _CANDIDATE.sub(" ", text)
    if _LONG_DIGITS.search(rest):  # another long number: which one is meant is not clear
        raise IdentityProblem("realname.identity.bad_id")
    name = " ".join(part for part in re.split(f"[{re.escape(_SEPARATORS)}]+", rest) if part)
    if not name or len(name) > NAME_MAX or not _NAME.fullmatch(name):
        raise IdentityProblem("realname.identity.no_name")
    return Identity(name=name, id_number=number)
