"""The workspace is the only source of a step's inputs; a user's own artefacts come in by path."""
import json

import pytest

from promedical.core.data import load_candidates
from promedical.reward.step import evaluation_set


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluation_set_is_the_workspace_bench_with_its_gold_or_a_users_labels(tmp_path):
    ws = tmp_path / "ws"
    bench, gold, about = evaluation_set(ws, None, 2)
    first_two = list(dict.fromkeys(c["prompt_id"] for c in load_candidates()))[:2]
    assert sorted({g["prompt_id"] for g in gold}) == sorted(first_two) and about["prompts"] == 2
    assert about["source"].startswith("workspace bench") and {g["prompt_id"] for g in gold} <= {r.id for r in bench}
    # a user's own gold-labelled held-out candidates, by path
    mine = [c for c in load_candidates() if c["prompt_id"] == first_two[1]]
    _, gold, about = evaluation_set(ws, str(write(tmp_path / "mine.jsonl", mine)), None)
    assert [g["response_id"] for g in gold] == [c["response_id"] for c in mine] and str(tmp_path) in about["source"]
    stray = write(tmp_path / "stray.jsonl", [{**mine[0], "prompt_id": "not-in-bench"}])
    with pytest.raises(ValueError, match="none of its prompt ids is a rubric of the workspace's bench"):
        evaluation_set(ws, str(stray), None)
