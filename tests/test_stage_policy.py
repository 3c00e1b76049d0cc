"""Stage 04 both ways — `step_grpo` and notebook 04 through papermill — on a tiny config: the same artefacts."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from promedical.policy.config import GRPOStepConfig

TINY = dict(model="tiny-qwen3", n_instructions=2, steps=2, group_size=2, max_completion_length=8, lr=1e-3, save_steps=1,
            monitor_every=1, n_monitor_prompts=1, monitor_max_new_tokens=4, report_to="none", seed=0)

RUN = """
import json, sys, torch
torch.set_num_threads(1)
from promedical.policy.step import step_grpo
print("SUMMARY", json.dumps(step_grpo(sys.argv[1], live=False, **json.loads(sys.argv[2]))))
"""


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.model
@pytest.mark.subprocess
@pytest.mark.notebook
def test_step_and_notebook_make_the_same_policy_artefacts(tmp_path):
    from promedical.app.notebooks import run_notebook
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    GRPOStepConfig(**TINY)  # the tiny config is a valid one
    by_step, by_notebook = tmp_path / "step", tmp_path / "notebook"
    CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1)).save(by_step / "reward" / "adapter")
    shutil.copytree(by_step / "reward", by_notebook / "reward")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # a process of its own: Unsloth, once imported, patches TRL
    out = subprocess.run([sys.executable, "-c", RUN, str(by_step), json.dumps(TINY)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    returned = json.loads(out.stdout.split("SUMMARY ", 1)[1])
    executed = run_notebook("04", by_notebook, TINY, timeout=600)

    assert files(by_step / "policy") == files(by_notebook / "policy")
    assert {"adapter/adapter_model.safetensors", "log.json", "curves.html", "monitor.html", "summary.json"} <= set(
        files(by_step / "policy"))
    summaries = [json.loads((ws / "policy" / "summary.json").read_text()) for ws in (by_step, by_notebook)]
    assert returned == summaries[0]  # the step returns what it wrote
    assert set(summaries[0]) == set(summaries[1]) and "monitor" in summaries[0]
    for s in summaries:
        assert s["steps"] == 2 and [r["step"] for r in s["monitor"]["rows"]] == [1, 2]
    assert summaries[0]["monitor"]["prompts"] == summaries[1]["monitor"]["prompts"]
    logs = [json.loads((ws / "policy" / "log.json").read_text())["history"] for ws in (by_step, by_notebook)]
    assert [sorted(h) for h in logs[0]] == [sorted(h) for h in logs[1]]

    # the notebook shows each phase's result: the prompts and reward tables, the curves, the monitor
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 4
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == 2
