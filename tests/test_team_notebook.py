"""Batch team review through papermill: notebook 02b with drafts, per-reviewer review files, adjudications."""
import json
from dataclasses import replace

import pytest

from promedical.app.notebooks import notebook_path, run_notebook
from promedical.core.data import load_split
from promedical.core.files import write_jsonl
from promedical.core.workspace import Workspace
from promedical.review.rounds import round_pool
from promedical.review.team import TeamStore
from promedical.rubrics.store import open_store


def test_notebook_paths_are_exact():
    assert notebook_path("02").name == "02_rubric_refinement.ipynb"
    assert notebook_path("02b").name == "02b_team_review.ipynb"


@pytest.mark.notebook
def test_team_review_notebook_batch(tmp_path):
    ws = tmp_path / "ws"
    base = [r for r in load_split("train") if {"p1", "b1"} <= {c.id for c in r.criteria}][:3]
    drafts = [replace(r, id=f"batch-{r.id}") for r in base]
    a, b, c = (r.id for r in drafts)
    write_jsonl(tmp_path / "drafts.jsonl", [r.to_dict() for r in drafts])
    write_jsonl(tmp_path / "assign.jsonl", [{"rubric_id": a, "reviewers": ["ana", "ben"]},
                                            {"rubric_id": b, "reviewers": ["ana", "ben"]},
                                            {"rubric_id": c, "reviewers": ["ben"]}])
    rd = tmp_path / "reviews"
    write_jsonl(rd / "ana.jsonl", [
        {"rubric_id": a, "reviewer": "ana", "decision": "approve", "remove": ["b1"], "comment": "b1 is filler"},
        {"rubric_id": b, "reviewer": "ana", "decision": "approve"}])
    write_jsonl(rd / "ben.jsonl", [
        {"rubric_id": a, "reviewer": "ben", "decision": "approve",
         "edits": [{"criterion": "p1", "field": "text", "value": "Tells them to call 999 now (ben)."}]},
        {"rubric_id": b, "reviewer": "ben", "decision": "approve"},
        {"rubric_id": c, "reviewer": "ben", "decision": "reject", "comment": "off-topic"}])
    write_jsonl(tmp_path / "adj.jsonl", [{"rubric_id": a, "adjudicator": "cy", "reason": "both changes are right",
                                          "choice": "ben", "picks": {"b1": "ana"}}])
    out = run_notebook("02b", ws, {"drafts_file": str(tmp_path / "drafts.jsonl"),
                                   "assignments_file": str(tmp_path / "assign.jsonl"), "reviews_dir": str(rd),
                                   "adjudications_file": str(tmp_path / "adj.jsonl")}, timeout=600)
    text = "".join("".join(o.get("text", "")) for cell in json.loads(out.read_text())["cells"]
                   for o in cell.get("outputs", []))
    assert "round 1: 3/3 resolved" in text and "waiting for adjudication: []" in text
    store = open_store(ws)
    team = TeamStore(store)
    final = store.latest(a)
    assert (final.action, final.author, final.status) == ("adjudication", "cy", "approved")
    assert "b1" not in {x.id for x in final.rubric.criteria}
    assert {x.id: x.text for x in final.rubric.criteria}["p1"] == "Tells them to call 999 now (ben)."
    assert store.latest(b).action == "consensus" and store.latest(c).status == "rejected"
    assert len(team.reviews(1)) == 5 and len(team.adjudications(1)) == 1
    summary = json.loads(Workspace.of(ws).team_review_summary.read_text())
    m = summary["metrics"]
    assert m["pass_rate"] == pytest.approx(1 / 3) and m["approval_rate"] == pytest.approx(2 / 3)
    ag = m["agreement"]["criterion_decision"]
    assert ag["units"] == len(drafts[0].criteria) + len(drafts[1].criteria) and ag["kappa"] is not None
    assert Workspace.of(ws).team_rounds_chart.stat().st_size > 100_000 and Workspace.of(ws).team_file.is_file()
    # the round closed, so the summary and the team file are written — for their owner only
    for f in (Workspace.of(ws).team_file, Workspace.of(ws).team_review_summary, TeamStore(store).path):
        assert f.stat().st_mode & 0o077 == 0, f
    pool = {r.id: r for r in round_pool(store).rubrics}
    assert pool[a].to_dict() == final.rubric.to_dict() and pool[b].to_dict() == store.latest(b).rubric.to_dict()
    assert c not in pool
    print(f"\nbatch round 1: pass rate {m['pass_rate']:.3f}, edit rate per tier {m['edit_rate_per_tier']}, "
          f"criterion kappa {ag['kappa']:.3f}, alpha {ag['alpha']:.3f}, observed {ag['observed_agreement']:.3f}")


@pytest.mark.model
def test_draft_round_drafts_with_the_approved_rubrics_as_few_shot(tmp_path):
    """Round 2 is drafted by a real (tiny, random-weight) model with the pool that holds round 1's approved rubric."""
    from conftest import torch_threads

    from promedical.models.llm import GenParams, TransformersLLM
    from promedical.review.queues import BlindReviewSession, assign
    from promedical.review.rounds import draft_round, open_round

    store = open_store(tmp_path / "ws")
    team = TeamStore(store)
    train = load_split("train")
    first = replace(train[0], id="round1-" + train[0].id)
    open_round(store, team, [first], round_pool(store))
    assign(store, team, {first.id: ["ana"]})
    BlindReviewSession(store, team, first.id, "ana", autosave=False).save("approved")
    with torch_threads(1):
        llm = TransformersLLM("tiny-qwen3")
        n = draft_round(store, team, [train[0], train[1]], llm, tmp_path / "round2.jsonl", k=1,
                        params=GenParams(max_new_tokens=48))
    assert n == 2
    results = [json.loads(line) for line in (tmp_path / "round2.jsonl").read_text().splitlines()]
    # the same instruction drafted again: the reviewed rubric of round 1 is its few-shot example
    assert results[0]["id"] == train[0].id and results[0]["few_shot"] == [first.id]
    assert first.id in team.round(2)["pool_ids"]
    valid = [r["id"] for r in results if r["rubric"]]
    assert team.round(2)["rubric_ids"] == valid and all(store.latest(i).status == "draft" for i in valid)
