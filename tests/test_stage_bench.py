"""Stage 05 both ways — `step_benchmark` and notebook 05 through papermill — on a tiny config: the same
artefacts; and a phase re-run with unchanged inputs reuses its artefact."""
import json
import shutil

import pytest

from promedical.bench.config import BenchmarkStepConfig

TINY = dict(model="tiny-qwen3", n_bench=2, max_new_tokens=8, judge_model="tiny-qwen3", judge_explanation_chars=8,
            n_judge=1, n_reference=2, n_probe=1, png=False, progress=False)


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """Two workspaces with the same tiny reward model and policy adapter: one run by the step, one by the notebook."""
    from peft import LoraConfig, get_peft_model

    from promedical.app.notebooks import run_notebook
    from promedical.bench.step import step_benchmark
    from promedical.models.loading import load_model
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    root = tmp_path_factory.mktemp("bench")
    by_step, by_notebook = root / "step", root / "notebook"
    CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1)).save(by_step / "reward" / "adapter")
    policy, _ = load_model("tiny-qwen3")
    get_peft_model(policy, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(by_step / "policy" / "adapter")
    for folder in ("reward", "policy"):
        shutil.copytree(by_step / folder, by_notebook / folder)
    result = step_benchmark(by_step, **TINY)
    executed = run_notebook("05", by_notebook, TINY, timeout=900)
    return by_step, by_notebook, result, executed


@pytest.mark.model
@pytest.mark.notebook
def test_step_and_notebook_make_the_same_benchmark_artefacts(workspaces):
    by_step, by_notebook, result, executed = workspaces
    assert files(by_step / "benchmark") == files(by_notebook / "benchmark")
    assert {"answers.jsonl", "graded.jsonl", "judge_graded.jsonl", "probes.json", "comparison.json", "audit.json",
            "report.html", "benchmark.json"} <= set(files(by_step / "benchmark"))
    assert files(by_step / "phases") == files(by_notebook / "phases") == ["bench.answer.json", "bench.judge.json",
                                                                          "bench.probe.json"]
    answers = [lines(ws / "benchmark" / "answers.jsonl") for ws in (by_step, by_notebook)]
    ids = [[(a["model"], a["prompt_id"], a["response_id"]) for a in rows] for rows in answers]
    assert ids[0] == ids[1] and {m for m, _, _ in ids[0]} == {"base", "aligned", "reference"}
    graded = [lines(ws / "benchmark" / "graded.jsonl") for ws in (by_step, by_notebook)]
    assert [(g["grader"], g["response_id"]) for g in graded[0]] == [(g["grader"], g["response_id"]) for g in graded[1]]
    assert {g["grader"] for g in graded[0]} == {"reward_model", "checks", "judge", "gold"}
    results = [json.loads((ws / "benchmark" / "benchmark.json").read_text()) for ws in (by_step, by_notebook)]
    assert result == results[0]  # the step returns what it wrote
    assert set(results[0]) == set(results[1])
    for key in ("headline", "summary", "grading", "probes", "audit", "parameters"):
        assert set(results[0][key]) == set(results[1][key]), key
    assert results[0]["parameters"] == {**results[1]["parameters"], "models": results[0]["parameters"]["models"]}
    assert set(results[0]["summary"]["checks"]["comparisons"]) == {"aligned vs base"}

    # the notebook shows each phase's result: tables after answering, grading, probing, comparing; the figures
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 7
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 3
    assert any("report: " in "".join(o.get("text", "")) for o in outputs)


@pytest.mark.model
@pytest.mark.notebook
def test_a_bench_phase_rerun_with_unchanged_inputs_reuses_its_artefact(workspaces, monkeypatch, capsys):
    import promedical.bench.answers
    import promedical.models.sources
    from promedical.bench.step import answer, benchmark_rubrics, grade_judge

    ws = workspaces[0]
    config = BenchmarkStepConfig(**TINY)
    rubrics = benchmark_rubrics(ws, config)

    def nothing_runs(*args, **kwargs):
        raise AssertionError("the phase ran again")

    monkeypatch.setattr(promedical.bench.answers, "generate_answers", nothing_runs)
    monkeypatch.setattr(promedical.models.sources, "llm_for", nothing_runs)
    capsys.readouterr()
    answers = answer(ws, config, rubrics)
    assert answers == lines(ws / "benchmark" / "answers.jsonl")
    assert "bench.answer: inputs and config unchanged since the last run; reusing benchmark/answers.jsonl" in (
        capsys.readouterr().out)
    assert grade_judge(ws, config, rubrics, answers) == lines(ws / "benchmark" / "judge_graded.jsonl")
    with pytest.raises(AssertionError, match="ran again"):  # another setting: the phase runs
        answer(ws, BenchmarkStepConfig(**{**TINY, "max_new_tokens": 9}), rubrics)
    with pytest.raises(AssertionError, match="ran again"):  # an answer dropped: the judge grades again
        grade_judge(ws, config, rubrics, [a for a in answers if a["model"] != "aligned"])
