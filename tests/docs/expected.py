"""Whether a program's output is what the docs say it prints.

The rules (strict for words, tolerant where a rerun or another machine differs):

- ``...`` alone on a line stands for any number of lines (none included);
  inside a line, for any text.
- ``<name>`` (a word in angle brackets: ``<iteration>``, ``<dir>``) stands for
  any text without spaces.
- Dates (``2026-11-25``), times of day (``18-00-34``) and durations or clocks
  (``00:00``, ``0:05:00``) match any of the same shape.
- Integers (``22``, ``9,610``) are equal. Numbers with a decimal point match
  within 5% of the expected value or 0.01, whichever is larger (``0.9721``
  matches ``0.9695``; throughput or timings are shown as ``...``).
- A run of spaces matches any run of spaces; trailing spaces and blank lines at
  the end are ignored. Every other character is compared as it is.
- The folder a block runs in is ``/home/you/distengine`` in the output (the
  docs' name for your project folder): ``PROJECT`` below.
"""

from __future__ import annotations

import re
from functools import cache

PROJECT = "/home/you/distengine"
RELATIVE, ABSOLUTE = 0.05, 0.01

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(
    r"(?P<dots>\.\.\.)"
    r"|(?P<placeholder><[A-Za-z][\w -]*>)"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<daytime>\b\d{2}-\d{2}-\d{2}\b)"
    r"|(?P<clock>\d+(?::\d{2})+)"
    rf"|(?P<number>{_NUMBER})"
    r"|(?P<space>\s+)"
)
_SHAPES = {
    "dots": ".*?",
    "placeholder": r"\S+?",
    "date": r"\d{4}-\d{2}-\d{2}",
    "daytime": r"\d{2}-\d{2}-\d{2}",
    "clock": r"\d+(?::\d{2})+",
    "space": r"\s+",
}


def mismatch(expected: str, actual: str, folder: str | None = None) -> str | None:
    """None when ``actual`` is what ``expected`` shows; else the first line that differs."""
    if folder:
        actual = actual.replace(folder, PROJECT)
    want, got = _lines(expected), _lines(actual)
    if _match(tuple(want), tuple(got)):
        return None
    return _first_difference(want, got)


def line_matches(expected: str, actual: str) -> bool:
    """One line of output against one expected line (the rules above, ``...`` within it)."""
    pattern, numbers = _line_pattern(expected.rstrip())
    found = re.fullmatch(pattern, actual.rstrip())
    if found is None:
        return False
    return all(_close(want, got) for want, got in zip(numbers, found.groups()))


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.rstrip().split("\n")]
    return lines if lines != [""] else []


def _match(want: tuple[str, ...], got: tuple[str, ...]) -> bool:
    @cache
    def from_(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        if want[i].strip() == "...":
            return any(from_(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and line_matches(want[i], got[j]) and from_(i + 1, j + 1)

    return from_(0, 0)


def _first_difference(want: list[str], got: list[str]) -> str:
    j = 0
    for i, line in enumerate(want):
        if line.strip() == "...":
            following = [w for w in want[i + 1 :] if w.strip() != "..."]
            if not following:
                break
            while j < len(got) and not line_matches(following[0], got[j]):
                j += 1
            continue
        if j >= len(got):
            return f"expected line {i + 1} {line!r}, but the output ended"
        if not line_matches(line, got[j]):
            return f"expected line {i + 1} {line!r}, got {got[j]!r}"
        j += 1
    return f"the output goes on after what the docs show: {got[j : j + 3]!r}"


@cache
def _line_pattern(line: str) -> tuple[str, tuple[str, ...]]:
    """A regex for ``line`` with a group per number, and the expected numbers."""
    parts, numbers, at = [], [], 0
    for token in _TOKEN.finditer(line):
        parts.append(re.escape(line[at : token.start()]))
        kind = token.lastgroup
        if kind == "number":
            parts.append(f"({_NUMBER})")
            numbers.append(token.group())
        else:
            parts.append(_SHAPES[kind])
        at = token.end()
    parts.append(re.escape(line[at:]))
    return "".join(parts), tuple(numbers)


def _close(want: str, got: str) -> bool:
    if "." not in want and "e" not in want.lower():
        return want.replace(",", "") == got.replace(",", "")
    a, b = float(want.replace(",", "")), float(got.replace(",", ""))
    return abs(a - b) <= max(RELATIVE * abs(a), ABSOLUTE)
