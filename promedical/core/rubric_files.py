"""Rubric files: validate a kit rubric JSONL or a HealthBench JSONL (auto-detected) and read kit rubrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from promedical.core.ids import quote
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Problem, Rubric, RubricError, _build_rubric, rubric_problems


def is_healthbench_record(obj: Any) -> bool:
    return isinstance(obj, dict) and "rubrics" in obj and "prompt" in obj


def file_problems(path: str | Path) -> list[Problem]:
    """Validate a kit rubric JSONL or a HealthBench JSONL (auto-detected per file)."""
    from promedical.core import healthbench

    name = str(path)
    try:
        records = list(iter_jsonl(path))
    except OSError as exc:
        return [Problem(name, 0, "<file>", f"cannot read: {exc.strerror or exc}")]
    if not records:
        return [Problem(name, 0, "<file>", "file is empty (no records)")]
    first = next((obj for _, obj, err in records if err is None), None)
    hb = is_healthbench_record(first)
    check = healthbench.record_problems if hb else rubric_problems
    id_key = "prompt_id" if hb else "id"
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, obj, err in records:
        if err:
            problems.append(Problem(name, line, "<line>", err))
            continue
        problems += [Problem(name, line, p, m) for p, m in check(obj)]
        rid = obj.get(id_key) if isinstance(obj, dict) else None
        if isinstance(rid, str):
            if rid in seen:
                problems.append(Problem(name, line, id_key, f"duplicate id {quote(rid)} (first on line {seen[rid]})"))
            else:
                seen[rid] = line
    return problems


def read_rubrics(path: str | Path) -> list[Rubric]:
    """Read a kit rubric JSONL; raises RubricError with every problem if anything is invalid."""
    problems = file_problems(path)
    if problems:
        raise RubricError(problems)
    first = next(obj for _, obj, _ in iter_jsonl(path))
    if is_healthbench_record(first):
        raise RubricError([Problem(str(path), 1, "<file>", "this is HealthBench data: run `promedical healthbench import` first")])
    return [_build_rubric(obj) for _, obj, _ in iter_jsonl(path)]
