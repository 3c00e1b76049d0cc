"""What an identifier may contain, and how anything taken from data is printed on one safe line.

An id (rubric ``id``, criterion ``id``, HealthBench ``prompt_id``, a grade's ``response_id``) is 1 to
128 printable ASCII characters: letters, digits and ``. _ - : + / @ #``, starting with a letter or a
digit. So no whitespace, no control, zero-width or bidirectional characters, and no look-alike
letters from other scripts: two ids that look the same are the same id.

``escape`` turns any text into one printable line: control characters (newlines included), format
characters (zero-width, bidi overrides), line/paragraph separators and unassigned or private code
points become ``\\n``, ``\\t`` or ``\\uXXXX``, so a value printed in an error report can never
forge another line or hide what it is. Escaping is idempotent (its output is printable), so a
message escaped when built and again when printed reads the same.
"""
from __future__ import annotations

import re
import unicodedata

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/@#-]{0,127}")


ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ - : + / @ #, starting with a letter or digit"


_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def id_problem(value) -> str | None:
    """None if value is a valid id, else what is wrong with it (the value escaped)."""
    if not isinstance(value, str) or not value:
        return "missing or empty (a non-empty string is required)"
    if ID_PATTERN.fullmatch(value) is None:
        return f"invalid id {quote(value)}: an id is {ID_RULE}"
    return None


def _escape_char(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        code = ord(ch)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def escape(text) -> str:
    """text as one line with every invisible or line-breaking character written as an escape."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) for ch in text)


def quote(value) -> str:
    """A value from data for an error message: 'escaped' in single quotes."""
    return f"'{escape(value)}'"
