"""Rubrics as data: criteria in three tiers, strict validation, JSONL reading.

A rubric record (one JSON object per line) looks like::

    {"id": "tr-001", "instruction": "..." | [{"role": "user", "content": "..."}],
     "category": "medication", "specialty": "cardiology",
     "criteria": [{"id": "p1", "tier": "proficiency", "text": "...", "weight": 0.4,
                   "dimension": "Accuracy · Dosing", "adheres": "...", "violates": "...",
                   "check": {"mention_any": ["emergency"]}}, ...],
     "provenance": {...}}

Tiers: ``proficiency`` (S1, weighted, weights sum to 1), ``bonus`` (S2, counted) and ``veto``
(S3). A veto criterion's text describes the *violation*, so "criterion met" means "violated" —
the HealthBench convention for negative items. Every problem found is reported as
``FILE:LINE: field.path: message``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from promedical.core.ids import escape, id_problem, quote

TIERS = ("proficiency", "bonus", "veto")


ROLES = ("system", "user", "assistant")


WEIGHT_SUM_TOLERANCE = 1e-6


CHECK_KEYS = ("mention_any", "mention_all", "mention_none", "min_words", "max_words", "min_list_items")


CRITERION_KEYS = ("id", "tier", "text", "weight", "dimension", "adheres", "violates", "check", "provenance")


RUBRIC_KEYS = ("id", "instruction", "category", "specialty", "criteria", "provenance")


_FLOAT_MAX = sys.float_info.max


# ----------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------
@dataclass
class Check:
    """A machine-checkable criterion: case-insensitive substrings, length and list structure."""

    mention_any: list[str] | None = None
    mention_all: list[str] | None = None
    mention_none: list[str] | None = None
    min_words: int | None = None
    max_words: int | None = None
    min_list_items: int | None = None

    def met(self, response: str) -> bool:
        text = response.casefold()
        words = len(response.split())
        if self.mention_any is not None and not any(p.casefold() in text for p in self.mention_any):
            return False
        if self.mention_all is not None and not all(p.casefold() in text for p in self.mention_all):
            return False
        if self.mention_none is not None and any(p.casefold() in text for p in self.mention_none):
            return False
        if self.min_words is not None and words < self.min_words:
            return False
        if self.max_words is not None and words > self.max_words:
            return False
        if self.min_list_items is not None and count_list_items(response) < self.min_list_items:
            return False
        return True

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in CHECK_KEYS if getattr(self, k) is not None}


def count_list_items(response: str) -> int:
    """Lines that start with a bullet (-, *, •) or a number followed by '.' or ')'."""
    count = 0
    for line in response.splitlines():
        s = line.lstrip()
        if s[:1] in ("-", "*", "•") and s[1:2] in (" ", "\t"):
            count += 1
            continue
        digits = len(s) - len(s.lstrip("0123456789"))
        if 0 < digits <= 3 and s[digits : digits + 1] in (".", ")"):
            count += 1
    return count


@dataclass
class Criterion:
    id: str
    tier: str
    text: str
    weight: float | None = None
    dimension: str | None = None
    adheres: str | None = None
    violates: str | None = None
    check: Check | None = None
    provenance: dict | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "tier": self.tier, "text": self.text}
        for key in ("weight", "dimension", "adheres", "violates"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.check is not None:
            out["check"] = self.check.to_dict()
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out


@dataclass
class Rubric:
    id: str
    instruction: str | list[dict]
    criteria: list[Criterion]
    category: str | None = None
    specialty: str | None = None
    provenance: dict | None = field(default=None)

    def tier(self, name: str) -> list[Criterion]:
        return [c for c in self.criteria if c.tier == name]

    @property
    def messages(self) -> list[dict]:
        """The instruction as chat messages (a plain string becomes one user turn)."""
        if isinstance(self.instruction, str):
            return [{"role": "user", "content": self.instruction}]
        return [dict(m) for m in self.instruction]

    @property
    def instruction_text(self) -> str:
        """The instruction flattened to text (for display, similarity and audits)."""
        if isinstance(self.instruction, str):
            return self.instruction
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.instruction)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction}
        for key in ("category", "specialty"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["criteria"] = [c.to_dict() for c in self.criteria]
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    @classmethod
    def from_dict(cls, obj: dict) -> "Rubric":
        """Build from a dict; raises RubricError listing every problem when it is invalid."""
        problems = rubric_problems(obj)
        if problems:
            raise RubricError([Problem("<dict>", 0, p, m) for p, m in problems])
        return _build_rubric(obj)


def _build_rubric(obj: dict) -> Rubric:
    criteria = []
    for c in obj["criteria"]:
        check = Check(**c["check"]) if c.get("check") is not None else None
        criteria.append(
            Criterion(
                id=c["id"], tier=c["tier"], text=c["text"],
                weight=float(c["weight"]) if c.get("weight") is not None else None,
                dimension=c.get("dimension"), adheres=c.get("adheres"), violates=c.get("violates"),
                check=check, provenance=c.get("provenance"),
            )
        )
    return Rubric(
        id=obj["id"], instruction=obj["instruction"], criteria=criteria,
        category=obj.get("category"), specialty=obj.get("specialty"), provenance=obj.get("provenance"),
    )


# ----------------------------------------------------------------------------------------------
# Problems and errors
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:  # one line whatever the data held (see ids.escape)
        return f"{escape(self.file)}:{self.line}: {escape(self.path)}: {escape(self.message)}"


class RubricError(ValueError):
    """Raised with every problem found; str() gives one ``FILE:LINE: path: message`` per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ----------------------------------------------------------------------------------------------
# Field checks (return a list of (field.path, message))
# ----------------------------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    """An int or float that converts to a float (an int past 1.8e308 does not, so it is no number here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return not isinstance(v, int) or abs(v) <= _FLOAT_MAX


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _unknown_keys(obj: dict, allowed: tuple, path: str) -> list[tuple[str, str]]:
    return [
        (f"{path}{k}", f"unknown field (expected one of: {', '.join(allowed)})")
        for k in obj
        if k not in allowed
    ]


def messages_problems(value: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        return [(path, "must be a non-empty list of {role, content} messages")]
    out = []
    for i, m in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(m, dict):
            out.append((p, "must be an object with role and content"))
            continue
        if m.get("role") not in ROLES:
            out.append((f"{p}.role", f"must be one of {', '.join(ROLES)}, got {quote(m.get('role'))}"))
        if not _nonempty_str(m.get("content")):
            out.append((f"{p}.content", "must be a non-empty string"))
        out += _unknown_keys(m, ("role", "content"), f"{p}.")
    if isinstance(value[-1], dict) and value[-1].get("role") != "user":
        out.append((f"{path}[{len(value) - 1}].role", "the last message must be from the user"))
    return out


def check_problems(check: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(check, dict) or not check:
        return [(path, f"must be an object with at least one of: {', '.join(CHECK_KEYS)}")]
    out = _unknown_keys(check, CHECK_KEYS, f"{path}.")
    for key in ("mention_any", "mention_all", "mention_none"):
        if key in check:
            v = check[key]
            if not isinstance(v, list) or not v or not all(_nonempty_str(s) for s in v):
                out.append((f"{path}.{key}", "must be a non-empty list of non-empty strings"))
    for key in ("min_words", "max_words", "min_list_items"):
        if key in check:
            v = check[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                out.append((f"{path}.{key}", "must be a non-negative integer"))
    lo, hi = check.get("min_words"), check.get("max_words")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        out.append((f"{path}.min_words", f"is greater than max_words ({lo} > {hi})"))
    return out


def criterion_problems(c: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(c, dict):
        return [(path, "must be an object")]
    out = _unknown_keys(c, CRITERION_KEYS, f"{path}.")
    bad_id = id_problem(c.get("id"))
    if bad_id:
        out.append((f"{path}.id", bad_id))
    tier = c.get("tier")
    if tier not in TIERS:
        out.append((f"{path}.tier", f"unknown tier {quote(tier)} (expected one of: {', '.join(TIERS)})"))
    if not _nonempty_str(c.get("text")):
        out.append((f"{path}.text", "missing or empty (a non-empty string is required)"))
    weight = c.get("weight")
    if tier == "proficiency":
        if weight is None:
            out.append((f"{path}.weight", "missing: proficiency criteria need a weight in (0, 1]"))
        elif not _is_number(weight):
            out.append((f"{path}.weight", f"must be a number, got {type(weight).__name__}"))
        elif not math.isfinite(weight) or weight <= 0 or weight > 1:
            out.append((f"{path}.weight", f"must be in (0, 1], got {weight}"))
    elif weight is not None and tier in TIERS:
        out.append((f"{path}.weight", f"only proficiency criteria carry a weight, not {tier}"))
    for key in ("dimension", "adheres", "violates"):
        if key in c and c[key] is not None and not isinstance(c[key], str):
            out.append((f"{path}.{key}", "must be a string"))
    if c.get("check") is not None:
        out += check_problems(c["check"], f"{path}.check")
    if c.get("provenance") is not None and not isinstance(c["provenance"], dict):
        out.append((f"{path}.provenance", "must be an object"))
    return out


def rubric_problems(obj: Any) -> list[tuple[str, str]]:
    """Every problem of one kit rubric record, as (field.path, message)."""
    if not isinstance(obj, dict):
        return [("<record>", f"must be a JSON object, got {type(obj).__name__}")]
    out = _unknown_keys(obj, RUBRIC_KEYS, "")
    bad_id = id_problem(obj.get("id"))
    if bad_id:
        out.append(("id", bad_id))
    instruction = obj.get("instruction")
    if isinstance(instruction, str):
        if not instruction.strip():
            out.append(("instruction", "is empty"))
    elif isinstance(instruction, list):
        out += messages_problems(instruction, "instruction")
    else:
        out.append(("instruction", "missing: a string or a list of chat messages is required"))
    for key in ("category", "specialty"):
        if obj.get(key) is not None and not _nonempty_str(obj[key]):
            out.append((key, "must be a non-empty string"))
    if obj.get("provenance") is not None and not isinstance(obj["provenance"], dict):
        out.append(("provenance", "must be an object"))
    criteria = obj.get("criteria")
    if not isinstance(criteria, list) or not criteria:
        out.append(("criteria", "missing or empty: a non-empty list of criteria is required"))
        return out
    seen: dict[str, int] = {}
    for i, c in enumerate(criteria):
        out += criterion_problems(c, f"criteria[{i}]")
        cid = c.get("id") if isinstance(c, dict) else None
        if isinstance(cid, str):
            if cid in seen:
                out.append((f"criteria[{i}].id", f"duplicate criterion id {quote(cid)} (first at criteria[{seen[cid]}])"))
            else:
                seen[cid] = i
    weights = [
        c.get("weight") for c in criteria
        if isinstance(c, dict) and c.get("tier") == "proficiency"
    ]
    if not weights:
        out.append(("criteria", "needs at least one proficiency criterion (S1)"))
    elif all(_is_number(w) and math.isfinite(w) for w in weights):
        total = math.fsum(weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            out.append(("criteria", f"proficiency weights sum to {total:.6g}, must sum to 1"))
    return out
