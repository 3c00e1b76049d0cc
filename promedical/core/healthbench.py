"""HealthBench interoperability: validation, scoring as simple-evals computes it, import/export.

HealthBench record: {"prompt": [messages], "prompt_id": str,
                     "rubrics": [{"criterion": str, "points": number, "tags": [str]}],
                     "example_tags": [str], ...}
Score of one example: points of the criteria met / sum of positive points. Overall and per-tag
scores are means over examples clipped to [0, 1]. A rubric-level tag scores each example on the
criteria carrying that tag only; an example-level tag averages the overall scores of the examples
that carry it.

Points are finite with 1e-6 <= |points| <= 1e6 (HealthBench uses -10..10), so every score and
every imported weight is a finite, non-zero number.

Import mapping to kit rubrics: positive points -> proficiency, weight = points / sum of positive
points (the largest weight absorbs the float rounding, so the weights sum to 1); negative points ->
veto (HealthBench criteria with negative points describe undesirable behaviour, and "met" means it
happened, which is exactly the kit's veto convention). Nothing of the row is lost: each item's
fields other than ``criterion`` are kept in its criterion's ``provenance.healthbench``, the row's
fields other than ``prompt``, ``prompt_id`` and ``rubrics`` (``example_tags``, ``canary``,
``ideal_completions_data``, ...) in the rubric's ``provenance.healthbench``.

Export is the inverse: an imported rubric, unchanged, exports to exactly the row it came from
(nothing added). A rubric that the HealthBench fields cannot express (bonus tier, criterion ids,
checks, edited weights, ...) exports with the mapped HealthBench fields, which HealthBench tools
score, plus the whole kit rubric under ``promedical_rubric``, which HealthBench tools ignore and
import restores exactly, after checking that the row's HealthBench fields are still what that
rubric exports to (a row edited after export is refused rather than silently half-applied).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from promedical.core.ids import id_problem
from promedical.core.rubric import (
    Criterion,
    Rubric,
    _build_rubric,
    _is_number,
    _nonempty_str,
    messages_problems,
    rubric_problems,
)

EXPORT_POINTS = {"proficiency": 10.0, "bonus": 2.0, "veto": -10.0}  # for criteria without HealthBench points


MIN_POINTS, MAX_POINTS = 1e-6, 1e6  # |points| bounds: scores and weights stay finite and non-zero


KIT_FIELD = "promedical_rubric"  # the exact kit rubric, on exported rows HealthBench cannot express


ROW_KEYS = ("prompt", "prompt_id", "rubrics")  # mapped to kit fields; every other key is carried as is


WEIGHT_MATCH = 1e-9  # a weight this close to points / total still "is" those points


def record_problems(obj: Any) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        return [("<record>", f"must be a JSON object, got {type(obj).__name__}")]
    out = messages_problems(obj.get("prompt"), "prompt")
    bad_id = id_problem(obj.get("prompt_id"))
    if bad_id:
        out.append(("prompt_id", bad_id))
    rubrics = obj.get("rubrics")
    if not isinstance(rubrics, list) or not rubrics:
        return out + [("rubrics", "missing or empty: a non-empty list is required")]
    for i, item in enumerate(rubrics):
        p = f"rubrics[{i}]"
        if not isinstance(item, dict):
            out.append((p, "must be an object"))
            continue
        if not _nonempty_str(item.get("criterion")):
            out.append((f"{p}.criterion", "missing or empty"))
        pts = item.get("points")
        if not _is_number(pts) or not math.isfinite(pts) or not MIN_POINTS <= abs(pts) <= MAX_POINTS:
            out.append((f"{p}.points", f"must be a non-zero finite number with {MIN_POINTS:g} <= |points| <= "
                                       f"{MAX_POINTS:g}, got {pts!r}"))
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            out.append((f"{p}.tags", "must be a list of strings"))
    if not any(isinstance(r, dict) and _is_number(r.get("points")) and r["points"] > 0 for r in rubrics):
        out.append(("rubrics", "needs at least one criterion with positive points"))
    tags = obj.get("example_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        out.append(("example_tags", "must be a list of strings"))
    if not out and KIT_FIELD in obj:
        out += [(f"{KIT_FIELD}.{p}" if p != "<record>" else KIT_FIELD, m) for p, m in rubric_problems(obj[KIT_FIELD])]
        if not out:
            try:
                to_rubric(obj)
            except ValueError as exc:
                out.append((KIT_FIELD, str(exc)))
    return out


def example_score(points: Sequence[float], met: Sequence[bool]) -> float | None:
    """Points met / positive points (None when there are no positive points)."""
    if len(points) != len(met):
        raise ValueError(f"{len(met)} grades for {len(points)} criteria")
    possible = sum(p for p in points if p > 0)
    if possible == 0:
        return None
    return sum(p for p, m in zip(points, met) if m) / possible


def score(records: Sequence[dict], grades: dict[str, Sequence[bool]]) -> dict:
    """HealthBench's overall and per-tag scores. grades maps prompt_id -> criteria_met in order."""
    values: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        met = grades.get(rec["prompt_id"])
        if met is None:
            raise KeyError(f"no grades for prompt_id {rec['prompt_id']!r}")
        items = rec["rubrics"]
        overall = example_score([r["points"] for r in items], met)
        values["overall"].append(overall)
        for tag in rec.get("example_tags", []):
            values[tag].append(overall)
        by_tag: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            for tag in dict.fromkeys(item.get("tags", [])):
                by_tag[tag].append(i)
        for tag, idx in by_tag.items():
            s = example_score([items[i]["points"] for i in idx], [met[i] for i in idx])
            if s is not None:
                values[tag].append(s)
    clipped = {k: float(np.clip(np.mean(v), 0, 1)) for k, v in values.items()}
    return {"score": clipped.pop("overall"), "n": len(records), "tags": dict(sorted(clipped.items()))}


def to_rubric(rec: dict) -> Rubric:
    """A valid HealthBench row -> kit rubric (the embedded kit rubric when the row carries one)."""
    if KIT_FIELD in rec:
        problems = rubric_problems(rec[KIT_FIELD])
        if problems:
            raise ValueError(f"{KIT_FIELD}.{problems[0][0]}: {problems[0][1]}")
        rubric = _build_rubric(rec[KIT_FIELD])
        if from_rubric(rubric) != rec:
            raise ValueError(f"{KIT_FIELD} does not match the row's HealthBench fields (edited after export?); "
                             f"remove {KIT_FIELD} to import the HealthBench fields alone")
        return rubric
    return _mapped_rubric(rec)


def _mapped_rubric(rec: dict) -> Rubric:
    items = rec["rubrics"]
    positive = math.fsum(r["points"] for r in items if r["points"] > 0)
    criteria, n = [], {"proficiency": 0, "veto": 0}
    for r in items:
        tier = "proficiency" if r["points"] > 0 else "veto"
        n[tier] += 1
        axis = next((t.split(":", 1)[1] for t in r.get("tags", []) if t.startswith("axis:")), None)
        criteria.append(Criterion(
            id=f"{tier[0]}{n[tier]}", tier=tier, text=r["criterion"],
            weight=r["points"] / positive if tier == "proficiency" else None, dimension=axis or None,
            provenance={"healthbench": {k: v for k, v in r.items() if k != "criterion"}},
        ))
    # make the S1 weights sum to 1 despite float division: the largest weight absorbs the rounding
    prof = [c for c in criteria if c.tier == "proficiency"]
    largest = max(prof, key=lambda c: c.weight)
    largest.weight = 1.0 - math.fsum(c.weight for c in prof if c is not largest)
    if not all(math.isfinite(c.weight) and 0 < c.weight <= 1 for c in prof):
        raise ValueError("rubrics: points give a proficiency weight outside (0, 1]")
    return Rubric(id=rec["prompt_id"], instruction=rec["prompt"], criteria=criteria,
                  provenance={"source": "healthbench", "healthbench": {k: v for k, v in rec.items() if k not in ROW_KEYS}})


def _hb_fields(provenance) -> dict | None:
    """The HealthBench fields an imported criterion or rubric kept (also the kit's older layout)."""
    if not isinstance(provenance, dict):
        return None
    if isinstance(provenance.get("healthbench"), dict):
        return provenance["healthbench"]
    if "healthbench_points" in provenance:  # criteria imported before provenance.healthbench
        return {"points": provenance["healthbench_points"], "tags": provenance.get("healthbench_tags", [])}
    if provenance.get("source") == "healthbench" and "example_tags" in provenance:
        return {"example_tags": provenance["example_tags"]}
    return None


def _export_points(rubric: Rubric) -> list[float]:
    kept = [(_hb_fields(c.provenance) or {}).get("points") for c in rubric.criteria]
    prof = [(c, p) for c, p in zip(rubric.criteria, kept) if c.tier == "proficiency"]
    usable = all(_is_number(p) and p > 0 for _, p in prof)
    total = math.fsum(p for _, p in prof) if usable else 0.0
    same = usable and all(abs(p / total - c.weight) <= WEIGHT_MATCH for c, p in prof)  # weights not edited
    out = []
    for c, p in zip(rubric.criteria, kept):
        if c.tier == "proficiency":
            out.append(p if same else float(f"{EXPORT_POINTS['proficiency'] * c.weight:.6g}"))
        elif c.tier == "veto" and _is_number(p) and p < 0:
            out.append(p)
        else:
            out.append(EXPORT_POINTS[c.tier])
    return out


def _mapped_row(rubric: Rubric) -> dict:
    items = []
    for c, points in zip(rubric.criteria, _export_points(rubric)):
        kept = _hb_fields(c.provenance)
        if kept is None:
            items.append({"criterion": c.text, "points": points, "tags": [f"tier:{c.tier}"]})
            continue
        item = {"criterion": c.text}
        item.update({k: points if k == "points" else v for k, v in kept.items() if k != "criterion"})
        item.setdefault("points", points)
        if "tags" in item and not _str_list(item["tags"]):  # kept fields HealthBench would refuse are not exported
            item["tags"] = [f"tier:{c.tier}"]
        items.append(item)
    row = {"prompt": rubric.messages, "prompt_id": rubric.id, "rubrics": items}
    extra = _hb_fields(rubric.provenance)
    if extra is None:
        extra = {"example_tags": [t for t in (f"category:{rubric.category}" if rubric.category else None,
                                              f"specialty:{rubric.specialty}" if rubric.specialty else None) if t]}
    row.update({k: v for k, v in extra.items() if k not in ROW_KEYS and k != KIT_FIELD
                and (k != "example_tags" or _str_list(v))})
    return row


def _str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) for t in value)


def from_rubric(rubric: Rubric) -> dict:
    """Kit rubric -> HealthBench row; to_rubric(from_rubric(r)) == r for every valid rubric."""
    row = _mapped_row(rubric)
    try:
        same = _mapped_rubric(row) == rubric
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        same = False
    return row if same else {**row, KIT_FIELD: rubric.to_dict()}
