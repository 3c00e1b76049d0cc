"""GRPO: the reward formula on expected tier scores, the TRL reward function, training, kill + resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, make_rubric

from promedical.core.rubric import Rubric
from promedical.core.scoring import RewardConfig, Scores
from promedical.policy.config import GRPOSettings
from promedical.policy.reward import RubricReward, combine, completion_text, expected_scores

RUBRIC = Rubric.from_dict(make_rubric())


def probs(p1=0.0, p2=0.0, p3=0.0, b1=0.0, v1=0.0):
    return {"p1": p1, "p2": p2, "p3": p3, "b1": b1, "v1": v1}


def test_expected_scores_and_reward_modes():
    s = expected_scores(RUBRIC, probs(p1=1.0, p2=0.5, b1=0.8, v1=0.1))
    assert s.s1 == pytest.approx(0.5 + 0.15) and s.s2 == pytest.approx(0.8) and s.s3 == pytest.approx(0.1)
    cfg = RewardConfig()
    full = combine(s, cfg)
    assert full == pytest.approx(min(0.65 + 0.25 * 0.8, 1.25) - 1.5 * 0.1)
    assert combine(s, cfg, "no_veto") == pytest.approx(0.65 + 0.2)
    top = Scores(1.0, 2.0, 0.0)
    assert combine(top, cfg) == pytest.approx(1.25) and combine(top, cfg, "no_margin") == pytest.approx(1.0)
    # one certain veto outweighs any gain
    assert combine(Scores(1.0, 2.0, 1.0), cfg) < combine(Scores(0.0, 0.0, 0.0), cfg)


def test_settings_validate_and_set_trl_defaults_explicitly(tmp_path):
    with pytest.raises(ValueError, match="group_size"):
        GRPOSettings(group_size=1)
    with pytest.raises(ValueError, match="lam"):
        GRPOSettings(lam=1.0)
    with pytest.raises(ValueError, match="mode"):
        GRPOSettings(mode="nope")
    from promedical.policy.trl_args import grpo_config

    args = grpo_config(GRPOSettings(group_size=4, prompts_per_step=2), tmp_path)
    assert (args.beta, args.loss_type, args.scale_rewards) == (0.04, "grpo", "group")
    assert args.num_generations == 4 and args.per_device_train_batch_size == 8


class LengthScorer:
    """Deterministic criterion scorer for the reward-function plumbing: longer answers meet more; an
    answer "as a doctor" violates the veto (r is the log-odds of the good side: low = violated)."""

    def __call__(self, items):
        return [[(-5.0 if "doctor" in response else 5.0) if tier == "veto" else len(response) / 10 - 2
                 for tier, _ in criteria] for _, response, criteria in items]


def test_rubric_reward_logs_components_and_keeps_order():
    logged = {}
    reward = RubricReward(LengthScorer(), {"r1": RUBRIC})
    out = reward(prompts=[RUBRIC.messages] * 3, prompt_id=["r1"] * 3,
                 completions=[[{"role": "assistant", "content": "short"}],
                              [{"role": "assistant", "content": "a much longer careful answer here"}],
                              [{"role": "assistant", "content": "a much longer careful answer, as a doctor"}]],
                 log_metric=lambda k, v: logged.setdefault(k, v))
    assert out[1] > out[0]
    assert out[2] < out[1]  # the veto probability rises with "doctor" in the answer
    assert reward.components(RUBRIC, LengthScorer()([(None, "as a doctor", reward.criteria(RUBRIC))])[0])["s3"] > 0.99
    assert set(logged) == {f"rubric/{k}" for k in ("s1", "s2", "s3", "veto_rate", "reward")}
    assert logged["rubric/reward"] == pytest.approx(sum(out) / 3)
    assert reward.calls == 1 and reward.seconds > 0
    scalar = RubricReward(LengthScorer(), {"r1": RUBRIC}, mode="scalar")
    assert 0 < scalar(prompts=[None], prompt_id=["r1"], completions=["some answer"])[0] < 1
    assert completion_text("plain") == "plain"


# ---------------------------------------------------------------------------------------------
# real training: tiny random Qwen3 policy + RM (plumbing), in subprocesses (Unsloth, once imported
# by another test, patches TRL process-wide)
# ---------------------------------------------------------------------------------------------
RUN = """
import json, sys, torch
torch.set_num_threads(1)
from promedical.reward.scorer import CriteriaRewardModel
from promedical.reward.config import RMConfig
from promedical.policy.step import step_grpo
ws, steps = sys.argv[1], int(sys.argv[2])
import pathlib
adapter = pathlib.Path(ws) / "reward" / "adapter"
if not adapter.exists():
    CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1)).save(adapter)
s = step_grpo(ws, model="tiny-qwen3", n_instructions=3, steps=steps, group_size=2, max_completion_length=8,
              lr=1e-3, save_steps=1, seed=0, live=False)
print("SUMMARY", json.dumps(s))
"""


def run_grpo(ws, steps, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", RUN, str(ws), str(steps)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def summary_of(proc) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.split("SUMMARY ", 1)[1])


def rewards_by_step(ws) -> dict[int, float]:
    history = json.loads((ws / "policy" / "log.json").read_text())["history"]
    return {h["step"]: h["rubric/reward"] for h in history if "rubric/reward" in h}


@pytest.mark.subprocess
def test_grpo_trains_logs_and_resumes_after_kill(tmp_path):
    straight = tmp_path / "straight"
    s = summary_of(run_grpo(straight, 4))
    assert s["steps"] == 4 and s["steps_this_run"] == 4 and s["resumed_from"] is None
    assert (straight / "policy" / "adapter" / "adapter_model.safetensors").is_file()
    html = (straight / "policy" / "curves.html").read_text()
    assert "plotly" in html and "S1 proficiency" in html
    history = json.loads((straight / "policy" / "log.json").read_text())["history"]
    logged = [h for h in history if "rubric/reward" in h]
    assert len(logged) == 4 and all("kl" in h and "completions/mean_length" in h for h in logged)
    split = s["split_seconds"]
    assert split["generation"] > 0 and split["reward"] > 0 and split["update"] > 0
    # the reward-hacking monitor (default: 2 probe prompts every 3 steps) logged step 3 into the log
    assert [r["step"] for r in s["monitor"]["rows"]] == [3] and len(s["monitor"]["prompts"]) == 2
    assert all(h.get("monitor/gap") is not None for h in history if "monitor/gap" in h)
    assert "Reward-hacking monitor" in (straight / "policy" / "monitor.html").read_text()
    from promedical.core.tracking import scalars

    tb = scalars(straight / "policy" / "checkpoints" / "runs")  # report_to="tensorboard", the default
    assert {f"train/rubric/{k}" for k in ("s1", "s2", "s3", "veto_rate")} <= set(tb) and len(tb["train/rubric/s1"]) == 4

    # kill a second run once checkpoint-2 exists, then resume it
    killed = tmp_path / "killed"
    proc = run_grpo(killed, 4, start_new_session=True)
    ckpt = killed / "policy" / "checkpoints" / "checkpoint-2"
    deadline = time.time() + 600
    while not (ckpt / "trainer_state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (killed / "policy" / "adapter").exists(), "the run finished before it could be killed"
    r = summary_of(run_grpo(killed, 4))
    assert r["steps"] == 4 and r["resumed_from"].endswith(("checkpoint-2", "checkpoint-3"))
    assert r["steps_this_run"] == 4 - int(r["resumed_from"].rsplit("-", 1)[1])
    assert [x["step"] for x in r["monitor"]["rows"]] == [3]  # kept in the checkpoint's log, or measured again
    # same data order and RNG state: the resumed steps reproduce the uninterrupted run
    a, b = rewards_by_step(straight), rewards_by_step(killed)
    for step in range(int(r["resumed_from"].rsplit("-", 1)[1]) + 1, 5):
        assert b[step] == pytest.approx(a[step], abs=1e-5), (step, a, b)
