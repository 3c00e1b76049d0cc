"""Per-criterion labels brought from elsewhere (physicians, another grader).

A JSONL of ``{"prompt_id", "response_id", "criteria_met": {criterion_id: bool}}``, one line per graded
response. It serves as the gold set for judge agreement (``judge.agreement(judgments, labels, rubrics)``)
or as training labels in place of the judge (``pairs.build_datasets(rubrics, candidates, labels)``).
Every problem is an error naming FILE:LINE: a repeated (prompt_id, response_id), a prompt without a
rubric, a criterion id the rubric does not have, a label that is not true/false, and any id that breaks
the kit's id rule (``core/ids.py``: no whitespace, invisible or look-alike characters, so ``"r1 "`` is
refused rather than kept as a second response next to ``"r1"``). ``null`` is allowed and means "not
labelled" (it is dropped, never read as false).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from promedical.core.ids import escape, id_problem, quote
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Rubric

Labels = dict[tuple[str, str], dict[str, bool]]


MAX_ERRORS = 20


class LabelError(ValueError):
    """One line per problem, each starting FILE:LINE."""


def load_labels(path: str | Path, rubrics: Mapping[str, Rubric] | Iterable[Rubric] | None = None, *,
                require_all: bool = False) -> Labels:
    """Read and validate a labels file. With ``rubrics``, prompt and criterion ids are checked against them;
    ``require_all`` also demands a label for every criterion of the rubric."""
    by_id = None if rubrics is None else (dict(rubrics) if isinstance(rubrics, Mapping) else {r.id: r for r in rubrics})
    out: Labels = {}
    first_line: dict[tuple[str, str], int] = {}
    errors: list[str] = []
    for line, obj, err in iter_jsonl(path):
        where = f"{path}:{line}"
        if err is not None:
            errors.append(f"{where}: {err}")
        elif not isinstance(obj, dict):
            errors.append(f"{where}: expected an object with prompt_id, response_id and criteria_met")
        else:
            errors += [f"{where}: {m}" for m in _check(obj, by_id, first_line, line, require_all)]
            if not errors:
                key = (obj["prompt_id"], obj["response_id"])
                first_line[key] = line
                out[key] = {cid: met for cid, met in obj["criteria_met"].items() if met is not None}
        if len(errors) >= MAX_ERRORS:
            errors.append(f"{path}: stopped after {MAX_ERRORS} errors")
            break
    if errors:
        raise LabelError("\n".join(errors))
    if not out:
        raise LabelError(f"{path}: no labels in the file")
    return out


def _check(obj: dict, rubrics, first_line: dict, line: int, require_all: bool) -> list[str]:
    pid, rid, met = obj.get("prompt_id"), obj.get("response_id"), obj.get("criteria_met")
    for field, value in (("prompt_id", pid), ("response_id", rid)):
        problem = id_problem(value)
        if problem:
            return [f"{field}: {problem}"]
    if not isinstance(met, dict) or not met:
        return ["criteria_met must be a non-empty object {criterion_id: true/false}"]
    unknown_keys = sorted(map(escape, set(obj) - {"prompt_id", "response_id", "criteria_met", "labeller", "note"}))
    if unknown_keys:
        return [f"unknown field(s) {', '.join(unknown_keys)}; valid: prompt_id, response_id, criteria_met, labeller, note"]
    bad_ids = [f"criteria_met: criterion {problem}" for cid in met if (problem := id_problem(cid))]
    if bad_ids:
        return bad_ids[:3]
    if (pid, rid) in first_line:
        return [f"({pid}, {rid}) labelled again (first at line {first_line[(pid, rid)]})"]
    problems = [f"criteria_met[{quote(cid)}] must be true, false or null, got {repr(v)[:60]}"
                for cid, v in met.items() if v is not None and not isinstance(v, bool)]
    if rubrics is not None:
        rubric = rubrics.get(pid)
        if rubric is None:
            return problems + [f"prompt_id {quote(pid)} has no rubric"]
        known = [c.id for c in rubric.criteria]
        problems += [f"criterion {quote(cid)} is not in rubric {quote(pid)} (its criteria: {', '.join(known)})"
                     for cid in met if cid not in known]
        if require_all:
            missing = [c for c in known if met.get(c) is None]
            if missing:
                problems.append(f"no label for criteria {', '.join(missing)} of rubric {quote(pid)}")
    return problems
