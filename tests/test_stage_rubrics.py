"""Stages 01 and 02 as phases: the step function and the notebook make the same artefacts; a phase
re-run with unchanged inputs reuses its artefact; what a user changes between phases is what the next uses."""
import json
from dataclasses import replace

import pytest
from conftest import make_rubric

from promedical.app.notebooks import run_notebook
from promedical.core.files import write_jsonl
from promedical.core.rubric import Rubric
from promedical.core.workspace import Workspace
from promedical.review.config import ReviewStepConfig
from promedical.review.step import apply_reviews_file, step_review
from promedical.rubrics.config import GenerateStepConfig
from promedical.rubrics.generate import latest_records
from promedical.rubrics.step import add_to_store, draft_rubrics, few_shot_pool, pick_instructions, step_generate
from promedical.rubrics.store import open_store

TINY = {"model": "tiny-qwen3", "n_instructions": 1, "max_new_tokens": 48, "progress": False}


def generated_ids(ws: Workspace) -> list[str]:
    return [r["id"] for r in latest_records(ws.generated_rubrics)]


@pytest.mark.model
@pytest.mark.notebook
def test_generate_step_and_notebook_01_make_the_same_artefacts(tmp_path):
    by_step, by_notebook = Workspace.of(tmp_path / "step"), Workspace.of(tmp_path / "notebook")
    summary = step_generate(by_step, **TINY)
    out = run_notebook("01", by_notebook, TINY, timeout=600)
    assert generated_ids(by_step) == generated_ids(by_notebook) and len(generated_ids(by_step)) == 1
    assert open_store(by_step).status_counts() == open_store(by_notebook).status_counts() == {"draft": 1}
    written = [json.loads(ws.generation_summary.read_text()) for ws in (by_step, by_notebook)]
    assert written[0]["items"] == written[1]["items"] == summary["items"] == 1
    assert summary["added_to_store"] == 1
    cells = json.loads(out.read_text())["cells"]
    shown = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in cells for o in c.get("outputs", []))
    assert generated_ids(by_step)[0] in shown and "drafts added to the store: 1" in shown  # each phase shows what it made


def review_workspace(root) -> tuple[Workspace, str]:
    """A store of three drafts (the last one without a safety veto) and a reviews file that edits and
    approves the first."""
    ws = Workspace.of(root)
    no_veto = make_rubric("c")
    no_veto["criteria"] = [c for c in no_veto["criteria"] if c["tier"] != "veto"]
    drafts = [Rubric.from_dict(make_rubric("a")), Rubric.from_dict(make_rubric("b")), Rubric.from_dict(no_veto)]
    open_store(ws).import_rubrics(drafts, author="generator:test")
    reviews = root / "reviews.jsonl"
    write_jsonl(reviews, [{"rubric_id": "a", "reviewer": "dr_li", "decision": "approve", "comment": "clearer",
                           "edits": [{"criterion": "p1", "field": "text", "value": "Asks about coughing blood."}]}])
    return ws, str(reviews)


@pytest.mark.notebook
def test_review_step_and_notebook_02_make_the_same_artefacts(tmp_path):
    params = {"policy": "approve-valid", "reviewer": "policy-bot"}
    by_step, reviews = review_workspace(tmp_path / "step")
    by_notebook, _ = review_workspace(tmp_path / "notebook")
    summary = step_review(by_step, reviews_file=reviews, **params)
    out = run_notebook("02", by_notebook, {**params, "reviews_file": reviews}, timeout=600)
    written = [json.loads(ws.review_summary.read_text()) for ws in (by_step, by_notebook)]
    for s in written:
        for r in s["reviews"]["revisions"]:
            r.pop("timestamp", None)
    assert written[0] == written[1] == json.loads(json.dumps(summary))
    assert summary["reviews"]["approved"] == 1 and summary["policy"]["approved"] == ["b"]
    assert list(summary["policy"]["rejected"]) == ["c"] and summary["approved"] == 2
    assert summary["reviewed_file_problems"] == [] and summary["analytics"]["rejected"] == 1
    assert by_step.reviewed_rubrics.read_text() == by_notebook.reviewed_rubrics.read_text()
    assert open_store(by_step).status_counts() == open_store(by_notebook).status_counts()
    cells = json.loads(out.read_text())["cells"]
    shown = "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in cells for o in c.get("outputs", []))
    assert "no veto criterion" in shown and "acceptance_rate" in shown


@pytest.mark.model
def test_draft_phase_reuses_its_artefact_until_an_input_or_a_field_changes(tmp_path, capsys):
    ws = Workspace.of(tmp_path)
    step_generate(ws, **TINY)
    assert "reusing" not in capsys.readouterr().out
    before = ws.generated_rubrics.read_bytes(), ws.generated_rubrics.stat().st_mtime_ns
    again = step_generate(ws, **TINY)
    assert "rubrics.draft: inputs and config unchanged since the last run; reusing" in capsys.readouterr().out
    assert (ws.generated_rubrics.read_bytes(), ws.generated_rubrics.stat().st_mtime_ns) == before
    assert again["items"] == 1 and again["added_to_store"] == 0
    step_generate(ws, **{**TINY, "max_new_tokens": 40})  # a drafting field changed: the phase runs (and resumes)
    assert "reusing" not in capsys.readouterr().out
    step_generate(ws, **{**TINY, "n_instructions": 2})  # another item: drafted, the first is not drafted again
    assert "reusing" not in capsys.readouterr().out
    assert len(generated_ids(ws)) == 2 and ws.generated_rubrics.read_bytes().startswith(before[0])
    assert open_store(ws).status_counts() == {"draft": 2}


@pytest.mark.model
def test_what_a_user_changes_between_phases_is_what_the_next_phase_uses(tmp_path):
    ws = Workspace.of(tmp_path)
    config = GenerateStepConfig.from_dict({**TINY, "n_instructions": 2})
    items = pick_instructions(ws, config)
    assert len(items) == 2 and items == pick_instructions(ws, config)  # the seed fixes the pick
    kept = items[1:]  # drop an instruction before drafting
    pool = few_shot_pool(ws)
    removed = {ex.id for ex in pool.examples_for(kept[0], 1)}  # drop the example it would have been shown
    pool.rubrics = [r for r in pool.rubrics if r.id not in removed]
    drafts, summary = draft_rubrics(ws, config, kept, pool)
    assert generated_ids(ws) == [kept[0].id] and summary["items"] == 1
    shown = latest_records(ws.generated_rubrics)[0]["few_shot"]
    assert len(shown) == 1 and not removed & set(shown)
    edited = [replace(d, category="edited-before-import") for d in drafts]
    counts = add_to_store(ws, config, edited)
    assert counts == {"added": len(drafts), "already_in_store": 0, "store": {"draft": len(drafts)} if drafts else {}}
    assert all(r.category == "edited-before-import" for r in open_store(ws).rubrics())


def test_a_reviews_file_is_applied_once(tmp_path, capsys):
    ws, reviews = review_workspace(tmp_path)
    config = ReviewStepConfig(reviews_file=reviews)
    first = apply_reviews_file(ws, config)
    store = open_store(ws)
    count = store.revision_count()
    assert first["applied"] == 1 and "reusing" not in capsys.readouterr().out
    assert apply_reviews_file(ws, config) == first and store.revision_count() == count
    assert "review.apply_reviews: inputs and config unchanged since the last run; reusing" in capsys.readouterr().out
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"rubric_id": "b", "reviewer": "dr_li", "decision": "reject", "comment": "off-topic"}])
    assert apply_reviews_file(ws, ReviewStepConfig(reviews_file=str(other)))["rejected"] == 1
    assert apply_reviews_file(ws, ReviewStepConfig(reviews_file=None)) is None
