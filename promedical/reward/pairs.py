"""Preference data from graded candidates: lexicographic response pairs, their expansion into
per-criterion (instruction, criterion, chosen, rejected) instances, and pointwise labels.

Grades are ``{criterion_id: bool | None}`` per response (None = unknown). A veto's "met" means
"violated". A candidate whose veto grade is unknown is never paired (unknown is not safe); an unknown
proficiency/bonus grade counts as not met for S1/S2. Everything left out is counted in the card.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from promedical.core.files import atomic_write_text, write_json
from promedical.core.rubric import TIERS, Rubric
from promedical.core.scoring import S1_TOLERANCE, Scores, is_good, lexicographic_compare, tier_scores

Grades = Mapping[str, "bool | None"]  # {criterion_id: met or None}


@dataclass
class ScoredCandidate:
    response_id: str
    response: str
    grades: dict[str, bool | None]
    scores: Scores


@dataclass
class CandidateScores:
    """Scores of the pairable candidates of one prompt, and what was left out."""

    prompt_id: str
    scored: list[ScoredCandidate]
    excluded_unknown_veto: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=lambda: {t: 0 for t in TIERS})  # unknown grades per tier


@dataclass
class Pair:
    prompt_id: str
    chosen_id: str
    rejected_id: str
    chosen: str
    rejected: str
    reason: str  # "veto" | "s1" | "s2": the first level of the lexicographic rule that decided
    chosen_scores: Scores
    rejected_scores: Scores


def candidate_scores(rubric: Rubric, candidates_with_grades: Iterable[Mapping]) -> CandidateScores:
    """Score candidates (dicts with response_id, response, criteria_met) of one rubric.

    Missing criteria count as unknown. Grades naming criteria the rubric lacks raise KeyError.
    """
    out = CandidateScores(prompt_id=rubric.id, scored=[])
    for cand in candidates_with_grades:
        grades = dict(cand["criteria_met"])
        extra = set(grades) - {c.id for c in rubric.criteria}
        if extra:
            raise KeyError(f"rubric {rubric.id}: grades of {cand['response_id']} name unknown criteria {sorted(extra)}")
        full = {c.id: grades.get(c.id) for c in rubric.criteria}
        for c in rubric.criteria:
            if full[c.id] is None:
                out.unknown[c.tier] += 1
        if any(full[c.id] is None for c in rubric.tier("veto")):
            out.excluded_unknown_veto.append(cand["response_id"])
            continue
        known = {cid: bool(v) for cid, v in full.items() if v is not None}
        out.scored.append(ScoredCandidate(cand["response_id"], cand["response"], full, tier_scores(rubric, known)))
    return out


def _reason(a: Scores, b: Scores) -> str:
    if a.s3 != b.s3:
        return "veto"
    return "s1" if abs(a.s1 - b.s1) > S1_TOLERANCE else "s2"


def preference_pairs(rubric: Rubric, scored: CandidateScores | Sequence[ScoredCandidate]) -> tuple[list[Pair], int]:
    """Every pair of scored candidates ordered by the lexicographic rule; returns (pairs, ties dropped)."""
    cands = scored.scored if isinstance(scored, CandidateScores) else list(scored)
    pairs, ties = [], 0
    for a, b in itertools.combinations(cands, 2):
        order = lexicographic_compare(a.scores, b.scores)
        if order == 0:
            ties += 1
            continue
        win, lose = (a, b) if order > 0 else (b, a)
        pairs.append(Pair(rubric.id, win.response_id, lose.response_id, win.response, lose.response,
                          _reason(a.scores, b.scores), win.scores, lose.scores))
    return pairs, ties


def expand_by_criterion(rubric: Rubric, pair: Pair, grades: Mapping[str, Grades]) -> list[dict]:
    """One instance per criterion on which the pair's two responses differ (both grades known).

    ``grades``: {response_id: {criterion_id: met}}. The chosen response is the one on the good side of
    the criterion (``scoring.is_good``: meets a proficiency/bonus criterion, does NOT violate a veto) —
    so an instance's chosen may be the pair's rejected (``agrees_with_pair`` says which).
    """
    g1, g2 = grades[pair.chosen_id], grades[pair.rejected_id]
    texts = {pair.chosen_id: pair.chosen, pair.rejected_id: pair.rejected}
    out = []
    for c in rubric.criteria:
        m1, m2 = g1.get(c.id), g2.get(c.id)
        if m1 is None or m2 is None or bool(m1) == bool(m2):
            continue
        good_is_first = is_good(c.tier, m1)
        chosen, rejected = (pair.chosen_id, pair.rejected_id) if good_is_first else (pair.rejected_id, pair.chosen_id)
        out.append({"prompt_id": rubric.id, "criterion_id": c.id, "tier": c.tier, "criterion": c.text,
                    "instruction": rubric.instruction_text, "messages": rubric.messages,
                    "chosen_id": chosen, "rejected_id": rejected, "chosen": texts[chosen], "rejected": texts[rejected],
                    "pair_reason": pair.reason, "agrees_with_pair": good_is_first})
    return out


def pointwise_rows(rubric: Rubric, candidates_with_grades: Iterable[Mapping],
                   sources: Mapping[tuple[str, str], str] | None = None) -> list[dict]:
    """One row per known (response, criterion) grade: label = criterion met (for a veto: violated)."""
    rows = []
    for cand in candidates_with_grades:
        grades = cand["criteria_met"]
        for c in rubric.criteria:
            met = grades.get(c.id)
            if met is None:
                continue
            rows.append({"prompt_id": rubric.id, "response_id": cand["response_id"], "criterion_id": c.id,
                         "tier": c.tier, "criterion": c.text, "weight": c.weight, "instruction": rubric.instruction_text,
                         "messages": rubric.messages, "response": cand["response"], "label": bool(met),
                         "source": (sources or {}).get((cand["response_id"], c.id), "given")})
    return rows


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------
def _features(kind: str):
    from datasets import Features, Value

    base = {"prompt_id": Value("string"), "criterion_id": Value("string"), "tier": Value("string"),
            "criterion": Value("string"), "instruction": Value("string"),
            "messages": [{"role": Value("string"), "content": Value("string")}]}
    if kind == "pairs":
        base.update({k: Value("string") for k in ("chosen_id", "rejected_id", "chosen", "rejected", "pair_reason")})
        base["agrees_with_pair"] = Value("bool")
    else:
        base.update({"response_id": Value("string"), "response": Value("string"), "label": Value("bool"),
                     "source": Value("string"), "weight": Value("float64")})  # weight: S1's (null in other tiers)
    return Features(base)


def _dataset(rows: list[dict], features):
    from datasets import Dataset

    # column-wise, so that an empty split still gets its columns
    return Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def _resolve_grades(candidates: Sequence[Mapping], grades) -> tuple[dict, dict]:
    """(grades by (prompt_id, response_id), source by (prompt_id, response_id, criterion_id))."""
    from promedical.reward.judge import Judgment

    if grades is None:  # the gold labels carried by the candidates
        g = {(c["prompt_id"], c["response_id"]): dict(c["criteria_met"]) for c in candidates}
        return g, {(p, r, cid): "gold" for (p, r), m in g.items() for cid in m}
    grades = list(grades) if not isinstance(grades, Mapping) else grades
    if isinstance(grades, list) and all(isinstance(j, Judgment) for j in grades):
        g, src = {}, {}
        for j in grades:
            g.setdefault((j.prompt_id, j.response_id), {})[j.criterion_id] = j.met
            src[(j.prompt_id, j.response_id, j.criterion_id)] = j.source
        return g, src
    if not isinstance(grades, Mapping):
        raise TypeError("grades must be None (gold), a list of Judgment or {(prompt_id, response_id): {cid: met}}")
    g = {k: dict(v) for k, v in grades.items()}
    return g, {(p, r, cid): "given" for (p, r), m in g.items() for cid in m}


def build_datasets(rubrics: Iterable[Rubric] | Mapping[str, Rubric], candidates: Sequence[Mapping], grades=None):
    """Build ``DatasetDict({"pairs", "pointwise"})`` and a card of counts.

    ``candidates``: dicts with prompt_id, response_id, response. ``grades``: None (use each candidate's
    gold ``criteria_met``), a list of ``judge.Judgment``, or {(prompt_id, response_id): {cid: met}}.
    """
    from datasets import DatasetDict

    by_id = dict(rubrics) if isinstance(rubrics, Mapping) else {r.id: r for r in rubrics}
    grade_map, sources = _resolve_grades(candidates, grades)
    by_prompt: dict[str, list[dict]] = {}
    for cand in candidates:
        if cand["prompt_id"] not in by_id:
            raise KeyError(f"no rubric for prompt_id {cand['prompt_id']!r}")
        key = (cand["prompt_id"], cand["response_id"])
        by_prompt.setdefault(cand["prompt_id"], []).append(
            {"response_id": cand["response_id"], "response": cand["response"], "criteria_met": grade_map.get(key, {})})

    pair_rows, point_rows = [], []
    card = {"prompts": len(by_prompt), "candidates": len(candidates), "excluded_unknown_veto": 0,
            "unknown_grades": {t: 0 for t in TIERS}, "pairs": 0, "pairs_by_reason": {"veto": 0, "s1": 0, "s2": 0},
            "ties_dropped": 0}
    source_counts: Counter = Counter()
    sources_by_prompt: dict[str, dict[tuple[str, str], str]] = {}
    for (p, rid, cid), s in sources.items():
        sources_by_prompt.setdefault(p, {})[(rid, cid)] = s
    for pid, cands in by_prompt.items():
        rubric = by_id[pid]
        for cand in cands:
            for c in rubric.criteria:
                known = cand["criteria_met"].get(c.id) is not None
                source_counts[sources.get((pid, cand["response_id"], c.id), "given") if known else "unknown"] += 1
        scored = candidate_scores(rubric, cands)
        card["excluded_unknown_veto"] += len(scored.excluded_unknown_veto)
        for t, n in scored.unknown.items():
            card["unknown_grades"][t] += n
        pairs, ties = preference_pairs(rubric, scored)
        card["pairs"] += len(pairs)
        card["ties_dropped"] += ties
        grades_by_rid = {c["response_id"]: c["criteria_met"] for c in cands}
        for pair in pairs:
            card["pairs_by_reason"][pair.reason] += 1
            pair_rows += expand_by_criterion(rubric, pair, grades_by_rid)
        point_rows += pointwise_rows(rubric, cands, sources_by_prompt.get(pid, {}))
    card["instances"] = {"total": len(pair_rows), **{t: sum(r["tier"] == t for r in pair_rows) for t in TIERS}}
    card["pointwise"] = {"total": len(point_rows), **{t: sum(r["tier"] == t for r in point_rows) for t in TIERS},
                         "positive": sum(r["label"] for r in point_rows)}
    card["sources"] = dict(sorted(source_counts.items()))
    dd = DatasetDict({name: _dataset(rows, _features(name))
                      for name, rows in (("pairs", pair_rows), ("pointwise", point_rows))})
    return dd, card


def save_datasets(dd, card: dict, out_dir: str | Path) -> Path:
    """Write the DatasetDict (``save_to_disk``), ``card.json`` and a short README.md dataset card."""
    out = Path(out_dir)
    dd.save_to_disk(str(out))
    write_json(out / "card.json", card)
    inst, pw = card.get("instances", {}), card.get("pointwise", {})
    lines = [
        "# ProMedical preference data", "",
        "Built by `promedical.reward.pairs.build_datasets` from graded candidate responses.", "",
        "- `pairs`: (instruction, criterion, chosen, rejected) instances — for each lexicographic response pair "
        "(fewer vetoes, then higher S1, then higher S2; ties dropped), one instance per criterion on which the two "
        "responses differ. For a veto the chosen response is the one that does not violate it; for "
        "proficiency/bonus, the one that meets it.",
        "- `pointwise`: (response, criterion, label) rows; label = criterion met (for a veto: violated).", "",
        "| count | value |", "|---|---|",
        f"| prompts | {card.get('prompts')} |", f"| candidates | {card.get('candidates')} |",
        f"| response pairs | {card.get('pairs')} |", f"| ties dropped | {card.get('ties_dropped')} |",
        f"| excluded (unknown veto grade) | {card.get('excluded_unknown_veto')} |",
        f"| pair instances (proficiency / bonus / veto) | {inst.get('total')} "
        f"({inst.get('proficiency')} / {inst.get('bonus')} / {inst.get('veto')}) |",
        f"| pointwise rows | {pw.get('total')} |", "",
        f"Grade sources: {card.get('sources')}. Unknown grades per tier: {card.get('unknown_grades')}.", "",
        "Load with `datasets.load_from_disk(path)`; `card.json` holds every count.", "",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return out
