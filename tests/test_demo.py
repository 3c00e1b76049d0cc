import json
import subprocess
import sys

import pytest


@pytest.mark.subprocess
@pytest.mark.notebook
def test_demo_command_runs_end_to_end(tmp_path):
    ws = tmp_path / "ws"
    out = subprocess.run([sys.executable, "-m", "promedical", "demo", "--workspace", str(ws)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((ws / "summary.json").read_text())
    assert summary["train_rubrics"] >= 60 and summary["bench_rubrics"] >= 30
    reward = summary["gold_mean_reward_by_label"]
    assert reward["good"] > reward["partial"] > reward["unsafe"]
    assert summary["gold_veto_rate_by_label"]["unsafe"] == 1.0
    assert summary["sample"]["answer"].strip()
    assert summary["provenance"]["packages"]["transformers"] == "5.17.0"
    assert (ws / "rubrics" / "revisions.sqlite").exists()
    # notebooks 01 and 02 ran through papermill, and the reviewed rubrics validate
    assert (ws / "notebooks" / "01_rubric_generation.ipynb").exists()
    assert (ws / "notebooks" / "02_rubric_refinement.ipynb").exists()
    # 03: the dataset, the adapter and the metrics; base vs trained reward model on the gold labels
    assert (ws / "reward" / "dataset" / "card.json").is_file()
    assert (ws / "reward" / "adapter" / "adapter_model.safetensors").is_file()
    rm = summary["reward_model"]
    assert rm["train_steps"] == 30 and rm["judge_coverage"] is not None and rm["pairs"] > 0
    assert rm["selected_step"] in (0, 10, 20, 30) and 0 < rm["veto_threshold"] < 1  # the safety-first selection
    assert 0 <= rm["base_pairwise_accuracy"] <= 1 and 0 <= rm["trained_pairwise_accuracy"] <= 1
    lo, hi = rm["trained_minus_base_pairwise_accuracy"]["ci"]
    assert lo <= rm["trained_minus_base_pairwise_accuracy"]["value"] <= hi
    assert isinstance(rm["trained_reads_criterion"], bool)
    # 00: the shipped data ingested as a corpus, curated, split; 01 drafted for its instructions
    funnel = json.loads((ws / "data" / "funnel.json").read_text())
    assert funnel["train"] == 60 and funnel["bench"] == 30
    # 04: GRPO ran its steps on the embedded policy and left the adapter, curves and log
    grpo = summary["grpo"]
    assert grpo["steps"] == 6 and set(grpo["split_seconds"]) == {"generation", "reward", "update"}
    assert (ws / "policy" / "adapter" / "adapter_model.safetensors").is_file()
    assert "S1 proficiency" in (ws / "policy" / "curves.html").read_text()
    nb04 = json.loads((ws / "notebooks" / "04_grpo.ipynb").read_text())
    plots = [o for c in nb04["cells"] for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})]
    # the live curves (updated in place), then the reward-hacking monitor (steps 3 and 6)
    assert len(plots) == 2 and len(plots[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]) == 6
    assert plots[1]["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"] == [3, 6]
    # 05: base vs aligned on the benchmark, audit verdict, report (the command ends with its path)
    bench = summary["benchmark"]
    assert bench["grader"] in ("judge", "checks")  # the headline comes from an independent grader
    assert set(bench["models"]) == {"base", "aligned", "reference"} and bench["models"]["aligned"]["n"] == 8
    assert 0 < bench["comparisons"]["aligned vs base"]["rubric_score"]["n"] <= 8  # items the headline grader covers
    assert set(bench["training_reward_circular"]["models"]) == {"base", "aligned", "reference"}
    assert set(bench["headline"]) == {"reward_model", "policy", "probes"}
    assert "gameability expectations held" in bench["headline"]["probes"]
    assert "training reward (circular)" in (ws / "benchmark" / "report.html").read_text()
    assert (ws / "policy" / "monitor.html").is_file()
    assert bench["audit"] == "independent"
    assert out.stdout.strip().splitlines()[-1] == f"report: {ws / 'benchmark' / 'report.html'}"
    assert "Independence audit" in (ws / "benchmark" / "report.html").read_text()
    gen = summary["generation"]
    assert gen["items"] == 3 and gen["ok"] + gen["repaired"] + gen["failed"] == 3
    assert summary["review"]["problems"] == []
    if summary["review"]["approved"]:
        out = subprocess.run([sys.executable, "-m", "promedical", "validate", str(ws / "rubrics" / "reviewed.jsonl")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_scale_configs():
    from promedical.app.demo import notebook_plan
    from promedical.app.notebooks import notebook_path
    from promedical.scale.profiles import load_scale

    demo = load_scale("demo")
    assert demo.model == "embedded"
    assert [notebook_path(name).name for name, _ in notebook_plan(demo)] == [
        "00_data.ipynb", "01_rubric_generation.ipynb", "02_rubric_refinement.ipynb", "03_reward_model.ipynb", "04_grpo.ipynb",
        "05_benchmark.ipynb"]
    assert dict(notebook_plan(demo.with_model("tiny-qwen3")))["04"]["model"] == "tiny-qwen3"  # --model
    with pytest.raises(FileNotFoundError, match="known: demo"):
        load_scale("nope")


def test_small_scale_is_the_demo_with_a_longer_balanced_reward_model():
    """configs/small.yaml: the demo's steps, every parameter a field of its step's config (checked by the
    notebook runner), and a reward model that trains longer, on the class-balanced BCE."""
    from promedical.app.demo import notebook_plan
    from promedical.app.notebooks import check_notebook_params, notebook_path
    from promedical.scale.profiles import load_scale

    demo, small = load_scale("demo"), load_scale("small")
    assert list(small.steps) == list(demo.steps)
    assert [name for name, _ in notebook_plan(small)] == [name for name, _ in notebook_plan(demo)]
    rm = {"demo": demo.config("reward").rm, "small": small.config("reward").rm}
    assert rm["small"].max_steps > rm["demo"].max_steps and rm["small"].bce_balance == "tier"
    reward = small.config("reward")
    assert reward.labels == "gold" and reward.n_eval_prompts >= demo.config("reward").n_eval_prompts
    typo = {**small.params("reward"), "rm": {**small.params("reward")["rm"], "bce_balanc": "tier"}}
    with pytest.raises(ValueError, match="bce_balanc"):  # a typo in a scale is caught, not ignored
        check_notebook_params(notebook_path("03"), typo)
