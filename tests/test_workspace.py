"""The workspace is the only source of a step's inputs; a user's own artefacts come in by path."""
import json

import pytest

from promedical.core.data import load_candidates
from promedical.reward.inputs import evaluation_set


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


def test_no_workspace_means_the_same_folder_to_the_cli_the_notebook_runner_and_the_library(tmp_path, monkeypatch):
    """`--workspace` left out, a notebook's `workspace = None` and `Workspace.of(None)` all resolve through
    Workspace: $PROMEDICAL_WORKSPACE, else runs/demo under the kit's root (not under the working directory)."""
    from dataclasses import replace

    import papermill

    from promedical.app.cli import main
    from promedical.app.notebooks import run_notebook
    from promedical.core.provenance import KIT_ROOT
    from promedical.core.workspace import Workspace, default_workspace
    from promedical.steps import STEPS

    monkeypatch.delenv("PROMEDICAL_WORKSPACE", raising=False)
    assert Workspace.folder(None) == (KIT_ROOT / "runs" / "demo").resolve() == default_workspace().resolve()
    monkeypatch.setenv("PROMEDICAL_WORKSPACE", str(tmp_path / "mine"))
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    seen = {}
    monkeypatch.setitem(STEPS, "review", replace(STEPS["review"], run=lambda ws, config: seen.update(cli=ws) or {}))
    assert main(["step", "review"]) == 0
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, out, parameters, **_: seen.update(notebook=parameters["workspace"]))
    run_notebook("02", None)
    assert seen["cli"] == Workspace.of(None) and seen["notebook"] == str(Workspace.of(None).root)
    assert Workspace.of(None).root == (tmp_path / "mine").resolve()
