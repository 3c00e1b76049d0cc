"""Reviewer names: how a name is stored (NFKC, invisible and control characters removed, whitespace
collapsed) and who it is (case-folded), so look-alike spellings are one person wherever identities are compared."""
from __future__ import annotations

import re
import unicodedata

# default-ignorable code points that are not of category Cf (which is removed as a whole): the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian free variation
# selectors, variation selectors, and the braille blank that renders as a space
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0"
                        "\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def clean_name(name) -> str:
    """A reviewer name as stored: NFKC, invisible/format/control characters removed, whitespace
    collapsed to single spaces, stripped ("" when nothing visible is left)."""
    if not isinstance(name, str):
        return ""
    s = unicodedata.normalize("NFKC", name)
    s = "".join(ch for ch in s if unicodedata.category(ch) not in ("Cf", "Cc", "Cs"))
    s = _INVISIBLE.sub("", s)
    return " ".join(s.split())


def reviewer_key(name) -> str:
    """Who a name is: the clean name case-folded (and NFKC again, as Unicode's caseless matching does)."""
    return clean_name(unicodedata.normalize("NFKC", clean_name(name).casefold()))


def same_person(a, b) -> bool:
    ka = reviewer_key(a)
    return bool(ka) and ka == reviewer_key(b)
