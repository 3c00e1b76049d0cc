"""Preference data: lexicographic pairs, per-criterion expansion, pointwise labels, datasets built from
hand-made grades and from the bench gold labels, and their round trip through save_to_disk."""
import itertools
import json

import pytest
from datasets import load_from_disk

from promedical.core.data import load_candidates, load_split
from promedical.core.rubric import Rubric
from promedical.core.scoring import Scores, lexicographic_compare, tier_scores
from promedical.reward.judge import Judgment
from promedical.reward.pairs import (
    build_datasets,
    candidate_scores,
    expand_by_criterion,
    pointwise_rows,
    preference_pairs,
    save_datasets,
)

RUBRIC = Rubric.from_dict({
    "id": "h1", "instruction": [{"role": "system", "content": "Be careful."},
                                {"role": "user", "content": "My dad has crushing chest pain. What should I do?"}],
    "criteria": [
        {"id": "p1", "tier": "proficiency", "weight": 0.7, "text": "Advises calling 999."},
        {"id": "p2", "tier": "proficiency", "weight": 0.3, "text": "Mentions aspirin with a caveat."},
        {"id": "b1", "tier": "bonus", "text": "Acknowledges the user's fear."},
        {"id": "b2", "tier": "bonus", "text": "Explains why speed matters."},
        {"id": "v1", "tier": "veto", "text": "Says the pain is certainly indigestion."},
    ],
})


def grades(p1, p2, b1, b2, v1):
    return {"p1": p1, "p2": p2, "b1": b1, "b2": b2, "v1": v1}


GRADES = {
    "A": grades(False, True, False, False, False),   # S1 .3, S2 0, S3 0
    "B": grades(True, True, True, True, True),       # S1 1, S2 2, S3 1: best S1/S2 but violates
    "C": grades(True, False, False, False, False),   # S1 .7
    "D": grades(True, False, True, False, False),    # S1 .7, S2 1
    "E": grades(True, False, False, False, False),   # ties with C
    "F": grades(True, True, True, True, None),       # unknown veto: excluded
    "G": grades(None, False, True, False, False),    # unknown p1 counts as not met: S1 0, S2 1
}
CANDS = [{"prompt_id": "h1", "response_id": rid, "response": f"response {rid}", "criteria_met": g}
         for rid, g in GRADES.items()]


def test_score_candidates_excludes_unknown_vetoes_and_counts_unknowns():
    scored = candidate_scores(RUBRIC, CANDS)
    assert [c.response_id for c in scored.scored] == ["A", "B", "C", "D", "E", "G"]
    assert scored.excluded_unknown_veto == ["F"]
    assert scored.unknown == {"proficiency": 1, "bonus": 0, "veto": 1}
    s = {c.response_id: c.scores for c in scored.scored}
    assert s["B"] == Scores(1.0, 2, 1) and s["D"] == Scores(0.7, 1, 0) and s["G"] == Scores(0.0, 1, 0)
    assert s["A"].s1 == pytest.approx(0.3)
    with pytest.raises(KeyError):
        candidate_scores(RUBRIC, [{"response_id": "x", "response": "x", "criteria_met": {"zz": True}}])


def test_lexicographic_pairs_veto_beats_higher_s1_and_ties_are_dropped():
    pairs, ties = preference_pairs(RUBRIC, candidate_scores(RUBRIC, CANDS))
    assert ties == 1  # C vs E
    assert len(pairs) == 14  # C(6, 2) = 15 pairs of the 6 scored candidates, minus the tie
    ordered = {(p.chosen_id, p.rejected_id): p.reason for p in pairs}
    for other in "ACDEG":  # B has the highest S1 and S2 but violates the veto: it loses every pair
        assert ordered[(other, "B")] == "veto"
    assert ordered[("C", "A")] == "s1" and ordered[("A", "G")] == "s1"
    assert ordered[("D", "C")] == "s2" and ordered[("D", "E")] == "s2"
    assert sorted(p.reason for p in pairs).count("s1") == 7
    assert not any({"C", "E"} == {p.chosen_id, p.rejected_id} for p in pairs)
    assert all(p.chosen == f"response {p.chosen_id}" and p.prompt_id == "h1" for p in pairs)


def test_expansion_direction_for_veto_and_proficiency():
    pairs, _ = preference_pairs(RUBRIC, candidate_scores(RUBRIC, CANDS))
    pair = next(p for p in pairs if (p.chosen_id, p.rejected_id) == ("C", "B"))
    inst = {i["criterion_id"]: i for i in expand_by_criterion(RUBRIC, pair, GRADES)}
    assert sorted(inst) == ["b1", "b2", "p2", "v1"]  # p1 is met by both: no instance
    assert (inst["v1"]["chosen_id"], inst["v1"]["rejected_id"]) == ("C", "B")  # does not violate
    assert inst["v1"]["agrees_with_pair"] is True and inst["v1"]["tier"] == "veto"
    for cid in ("p2", "b1", "b2"):  # B meets them: chosen on the criterion, though it lost the pair
        assert (inst[cid]["chosen_id"], inst[cid]["rejected_id"]) == ("B", "C")
        assert inst[cid]["agrees_with_pair"] is False
    i = inst["p2"]
    assert i["chosen"] == "response B" and i["rejected"] == "response C" and i["criterion"] == RUBRIC.criteria[1].text
    assert i["messages"] == RUBRIC.messages and i["instruction"] == RUBRIC.instruction_text
    assert i["prompt_id"] == "h1" and i["pair_reason"] == "veto"

    # an unknown grade on either side yields no instance for that criterion
    pair = next(p for p in pairs if (p.chosen_id, p.rejected_id) == ("A", "G"))
    inst = {i["criterion_id"]: i for i in expand_by_criterion(RUBRIC, pair, GRADES)}
    assert sorted(inst) == ["b1", "p2"]
    assert inst["p2"]["chosen_id"] == "A" and inst["b1"]["chosen_id"] == "G"


def test_pointwise_rows_skip_unknown_grades():
    rows = pointwise_rows(RUBRIC, [c for c in CANDS if c["response_id"] in ("B", "G")], {("G", "b1"): "llm"})
    assert [(r["response_id"], r["criterion_id"], r["label"]) for r in rows] == [
        ("B", "p1", True), ("B", "p2", True), ("B", "b1", True), ("B", "b2", True), ("B", "v1", True),
        ("G", "p2", False), ("G", "b1", True), ("G", "b2", False), ("G", "v1", False)]
    assert rows[6]["source"] == "llm" and rows[0]["source"] == "given"
    assert rows[4]["tier"] == "veto" and rows[4]["response"] == "response B"


def test_build_datasets_from_hand_grades_and_judgments():
    cands = [{k: v for k, v in c.items() if k != "criteria_met"} for c in CANDS]
    dd, card = build_datasets([RUBRIC], cands, {("h1", c["response_id"]): c["criteria_met"] for c in CANDS})
    assert (card["pairs"], card["ties_dropped"], card["excluded_unknown_veto"]) == (14, 1, 1)
    assert card["pairs_by_reason"] == {"veto": 5, "s1": 7, "s2": 2}
    assert card["unknown_grades"] == {"proficiency": 1, "bonus": 0, "veto": 1}
    assert card["pointwise"]["total"] == dd["pointwise"].num_rows == 7 * 5 - 2
    assert card["sources"] == {"given": 33, "unknown": 2}

    tiers = {c.id: c.tier for c in RUBRIC.criteria}
    js = [Judgment("h1", rid, cid, tiers[cid], met, "unknown" if met is None else ("check" if cid == "p1" else "llm"))
          for rid, g in GRADES.items() for cid, met in g.items()]
    dd2, card2 = build_datasets({"h1": RUBRIC}, cands, js)
    assert card2["sources"] == {"check": 6, "llm": 27, "unknown": 2}
    assert {k: v for k, v in card2.items() if k != "sources"} == {k: v for k, v in card.items() if k != "sources"}
    assert dd2["pairs"]["chosen_id"] == dd["pairs"]["chosen_id"]


def direct_counts(rubrics, cands):
    """Independent count from the gold labels: every candidate pair, the lexicographic rule, differing criteria."""
    by_id = {r.id: r for r in rubrics}
    out = {"pairs": 0, "ties": 0, "inst": {"proficiency": 0, "bonus": 0, "veto": 0}, "pointwise": 0}
    for pid in {c["prompt_id"] for c in cands}:
        group = [c for c in cands if c["prompt_id"] == pid]
        rubric = by_id[pid]
        out["pointwise"] += len(group) * len(rubric.criteria)
        for a, b in itertools.combinations(group, 2):
            if lexicographic_compare(tier_scores(rubric, a["criteria_met"]), tier_scores(rubric, b["criteria_met"])) == 0:
                out["ties"] += 1
                continue
            out["pairs"] += 1
            for c in rubric.criteria:
                if a["criteria_met"][c.id] != b["criteria_met"][c.id]:
                    out["inst"][c.tier] += 1
    return out


@pytest.fixture(scope="module")
def bench_data():
    bench, cands = load_split("bench"), load_candidates()
    dd, card = build_datasets(bench, cands)
    return bench, cands, dd, card


def test_build_datasets_on_bench_gold_labels(bench_data):
    bench, cands, dd, card = bench_data
    want = direct_counts(bench, cands)
    assert card["pairs"] == want["pairs"] > 0 and card["ties_dropped"] == want["ties"]
    assert card["pairs"] == sum(card["pairs_by_reason"].values()) and card["pairs_by_reason"]["veto"] > 0
    assert {t: card["instances"][t] for t in ("proficiency", "bonus", "veto")} == want["inst"]
    assert card["instances"]["total"] == dd["pairs"].num_rows == sum(want["inst"].values())
    assert card["pointwise"]["total"] == dd["pointwise"].num_rows == want["pointwise"]
    assert card["excluded_unknown_veto"] == 0 and card["sources"] == {"gold": want["pointwise"]}
    assert (card["prompts"], card["candidates"]) == (len({c["prompt_id"] for c in cands}), len(cands))

    assert set(dd["pairs"].column_names) >= {"prompt_id", "criterion_id", "tier", "criterion", "instruction", "messages",
                                            "chosen_id", "rejected_id", "chosen", "rejected", "pair_reason"}
    assert set(dd["pointwise"].column_names) >= {"prompt_id", "response_id", "criterion_id", "tier", "criterion",
                                                "response", "label", "source"}
    gold = {(c["prompt_id"], c["response_id"]): c["criteria_met"] for c in cands}
    texts = {(c["prompt_id"], c["response_id"]): c["response"] for c in cands}
    for row in dd["pairs"]:
        ch, rj = gold[(row["prompt_id"], row["chosen_id"])], gold[(row["prompt_id"], row["rejected_id"])]
        cid = row["criterion_id"]
        assert ch[cid] != rj[cid]
        assert (ch[cid] is False) if row["tier"] == "veto" else (ch[cid] is True)  # chosen is the better side
        assert row["chosen"] == texts[(row["prompt_id"], row["chosen_id"])]
        assert row["messages"][-1]["role"] == "user"
    for row in dd["pointwise"].select(range(0, dd["pointwise"].num_rows, 7)):
        assert row["label"] == gold[(row["prompt_id"], row["response_id"])][row["criterion_id"]]


def test_save_datasets_round_trips(bench_data, tmp_path):
    _, _, dd, card = bench_data
    out = save_datasets(dd, card, tmp_path / "prefs")
    back = load_from_disk(str(out))
    assert set(back) == {"pairs", "pointwise"}
    for split in back:
        assert back[split].num_rows == dd[split].num_rows and back[split].features == dd[split].features
        assert back[split][0] == dd[split][0] and back[split][-1] == dd[split][-1]
    assert json.loads((out / "card.json").read_text(encoding="utf-8")) == card
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# ProMedical preference data") and f"| response pairs | {card['pairs']} |" in readme
