"""Full-scale launch path: exact commands (dry run), and two real processes (gloo) on CPU."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=900):
    out = subprocess.run([sys.executable, "-m", "promedical", *args], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    return out.stdout


@pytest.mark.subprocess
def test_dry_run_prints_the_full_scale_commands(tmp_path):
    out = cli("launch", "grpo", "--dry-run", "--workspace", str(tmp_path)).strip().splitlines()
    assert out[0] == "# memory plan (grpo, scale full):" and out[-3].endswith(": fits")  # checked before launching
    grpo = [line for line in out if not line.startswith("#")]
    assert len(grpo) == 2 and grpo[0].endswith(" &")
    assert grpo[0].startswith("CUDA_VISIBLE_DEVICES=6,7 trl vllm-serve --model Qwen/Qwen3-8B --tensor-parallel-size 2")
    assert grpo[1].startswith("CUDA_VISIBLE_DEVICES=0,1,2,3,4,5 accelerate launch --num_processes 6 --num_machines 1 "
                              f"--config_file {ROOT / 'configs/accelerate/deepspeed_zero3.yaml'} -m promedical step grpo")
    params = json.loads(grpo[1].split("--params ", 1)[1].strip("'"))
    assert params["beta"] == 0.04 and params["group_size"] == 8 and params["vllm_mode"] == "server"
    rm = cli("launch", "rm-train", "--dry-run", "--workspace", str(tmp_path)).strip().splitlines()[-1]
    assert "accelerate launch --num_processes 8" in rm and "vllm-serve" not in rm
    # the worker gets the whole config the scale built (every field), so it runs what was planned
    from promedical.reward.config import RMTrainStepConfig

    assert json.loads(rm.split("--params ", 1)[1].strip("'")) == RMTrainStepConfig(
        model="Qwen/Qwen3-8B", backend="peft", epochs=2, batch_size=64, micro_batch_size=2, lr=5e-6, max_length=8192,
        gradient_checkpointing=True).to_dict()
    one_gpu = cli("launch", "grpo", "--dry-run", "--scale", "gpu", "--workspace", str(tmp_path)).strip()
    assert "vllm-serve" not in one_gpu and '"vllm_mode": "colocate"' in one_gpu


def make_reward_dataset(ws):
    from promedical.core.data import load_candidates, load_split
    from promedical.reward.pairs import build_datasets, save_datasets

    # the 13 gold candidates this test was sized on: more candidates per step change how far Adam moves the
    # near-zero-gradient LoRA entries, which the tolerance below is relative to
    sized_on = {f"bn-00{p}-{x}" for p in (1, 2, 3) for x in "abcd"} | {"bn-001-e"}
    candidates = [c for c in load_candidates(n_prompts=3) if c["response_id"] in sized_on]
    assert len(candidates) == 13
    dd, card = build_datasets(load_split("bench"), candidates)
    save_datasets(dd, card, ws / "reward" / "dataset")


@pytest.mark.multiprocess
def test_two_process_reward_model_training_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    for ws in (one, two):
        make_reward_dataset(ws)
    params = ["-p", "model=tiny-qwen3", "-p", "max_steps=3", "-p", "batch_size=4", "-p", "lr=0.005"]
    cli("step", "rm-train", "--workspace", str(one), *params)
    out = cli("launch", "rm-train", "--scale", "demo", "--num-processes", "2", "--cpu", "--workspace", str(two), *params)
    assert '"processes": 2' in out
    a = load_file(str(one / "reward" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(two / "reward" / "adapter" / "adapter_model.safetensors"))
    from peft import get_peft_model_state_dict

    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    init = get_peft_model_state_dict(CriteriaRewardModel.load(RMConfig(model="tiny-qwen3")).model)
    assert a.keys() == b.keys() == init.keys()
    for k in a:
        update = (a[k] - init[k]).abs().max()
        assert update > 1e-3, k  # every LoRA tensor trained
        # the same steps up to float summation order (each process pads its own shard); Adam turns
        # near-zero gradients into lr-sized moves, so compare against the size of the update
        assert (a[k] - b[k]).abs().max() <= 0.05 * update, k
    la = json.loads((one / "reward" / "train_log.json").read_text())["history"]
    lb = json.loads((two / "reward" / "train_log.json").read_text())["history"]
    assert [h["loss"] for h in la] == pytest.approx([h["loss"] for h in lb], abs=1e-4)


@pytest.mark.multiprocess
def test_two_process_grpo_steps(tmp_path):
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1)).save(tmp_path / "reward" / "adapter")
    cli("launch", "grpo", "--scale", "demo", "--num-processes", "2", "--cpu", "--workspace", str(tmp_path),
        "-p", "model=tiny-qwen3", "-p", "steps=2", "-p", "group_size=2", "-p", "max_completion_length=8",
        "-p", "n_instructions=4", "-p", "save_steps=1", "-p", "live=false")
    log = json.loads((tmp_path / "policy" / "log.json").read_text())
    steps = [h for h in log["history"] if "rubric/reward" in h]
    assert log["summary"]["steps"] == 2 and len(steps) == 2
    assert all("kl" in h for h in steps)
    assert (tmp_path / "policy" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.notebook
def test_full_scale_notebook_dry_run(tmp_path):
    from promedical.app.notebooks import run_notebook

    out = run_notebook("06", tmp_path, {"workspace": str(tmp_path / "full")})
    import json as _json

    text = "".join("".join(o.get("text", "")) for c in _json.loads(out.read_text())["cells"] for o in c.get("outputs", []))
    assert "accelerate launch --num_processes 8" in text and "trl vllm-serve" in text and ": fits" in text


@pytest.mark.multiprocess
def test_fsdp2_sharded_reward_model_saves_a_complete_adapter_that_scores_as_one_process(tmp_path):
    """FSDP2 (fully_shard, two gloo processes) on the kit's reward model and packed loss: the gathered
    adapter has every LoRA tensor, non-empty, and scores the gold candidates as the one-process run."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from promedical.core.data import load_candidates, load_split
    from promedical.reward.config import RMConfig
    from promedical.reward.evaluation import reward_model_scores
    from promedical.reward.scorer import CriteriaRewardModel

    worker = str(ROOT / "tests" / "fsdp_worker.py")
    subprocess.run([sys.executable, worker, str(tmp_path / "one"), "3"], cwd=ROOT, env=ENV, check=True, timeout=900,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", worker,
                          str(tmp_path / "two"), "3"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    info = json.loads((tmp_path / "two" / "worker.json").read_text())
    assert info["world"] == 2 and info["dtensor_params"] == info["params"] > 0  # every trainable tensor was sharded
    one_log = json.loads((tmp_path / "one" / "worker.json").read_text())
    assert info["losses"] == pytest.approx(one_log["losses"], abs=1e-4)
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    init = get_peft_model_state_dict(CriteriaRewardModel.load(RMConfig(model="tiny-qwen3")).model)
    assert a.keys() == b.keys() == init.keys()
    for k in b:
        assert b[k].numel() > 0 and b[k].shape == init[k].shape, k
        assert (b[k] - init[k]).abs().max() > 1e-3, k  # trained, not the initial values
    rubrics, cands = load_split("bench"), load_candidates(n_prompts=2)
    scores = {}
    for name in ("one", "two"):
        rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3"), adapter=tmp_path / name)
        rm.model.eval()
        scores[name] = reward_model_scores(rm.score_batch, rubrics, cands, progress=False)
    assert scores["one"].keys() == scores["two"].keys() and scores["one"]
    assert [scores["two"][k] for k in scores["one"]] == pytest.approx(list(scores["one"].values()), abs=2e-3)


@pytest.mark.multiprocess
def test_zero3_on_cpu_through_the_launch_path_matches_one_process(tmp_path):
    """`promedical launch rm-train --cpu --sharding zero3`: the shipped DeepSpeed ZeRO-3 config, two CPU
    processes (DeepSpeed's CPU accelerator talks through gloo), the Trainer's DeepSpeed engine. The
    gathered adapter is complete and equals the one-process run; the checkpoint holds ZeRO's sharded state."""
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    for ws in (one, two):
        make_reward_dataset(ws)
    params = ["-p", "model=tiny-qwen3", "-p", "max_steps=3", "-p", "batch_size=4", "-p", "lr=0.005", "-p", "save_every=3"]
    cli("step", "rm-train", "--workspace", str(one), *params)
    out = cli("launch", "rm-train", "--scale", "demo", "--num-processes", "2", "--cpu", "--sharding", "zero3",
              "--workspace", str(two), *params)
    assert '"processes": 2' in out and '"distributed": "DEEPSPEED"' in out
    a = load_file(str(one / "reward" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(two / "reward" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert b[k].shape == a[k].shape and b[k].numel() > 0, k  # gathered, not a ZeRO-3 placeholder
        assert (a[k] - b[k]).abs().max() <= 1e-3, k
    assert list((two / "reward" / "checkpoints" / "checkpoint-3").glob("global_step3/*optim_states.pt"))
    la = json.loads((one / "reward" / "train_log.json").read_text())["history"]
    lb = json.loads((two / "reward" / "train_log.json").read_text())["history"]
    assert [h["loss"] for h in la] == pytest.approx([h["loss"] for h in lb], abs=1e-4)
