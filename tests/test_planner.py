"""Pre-flight GPU memory planner: the arithmetic, and refusing what cannot fit."""
import subprocess
import sys

import pytest
from conftest import ROOT

from promedical.scale.planner import QWEN3_8B, Arch, PlanError, arch_of, plan, preflight


def test_parameter_counts():
    qwen = arch_of("Qwen/Qwen3-8B")
    assert qwen == Arch.from_config(QWEN3_8B)
    assert qwen.params == pytest.approx(8.19e9, rel=0.01)  # Qwen3-8B: 8.2B parameters
    # LoRA r=16 on q,k,v,o: 16*(4096+4096) + 2*16*(4096+1024) + 16*(4096+4096) per layer, 36 layers
    assert qwen.lora_params(16) == 36 * (16 * 8192 * 2 + 2 * 16 * 5120)


@pytest.mark.model
def test_architecture_arithmetic_matches_a_real_model(embedded):
    model, _ = embedded
    assert arch_of("embedded").params == sum(p.numel() for p in model.parameters())


def test_plan_refuses_what_cannot_fit_with_the_numbers():
    full = plan("grpo", policy="Qwen/Qwen3-8B", reward="Qwen/Qwen3-8B", lora=False, n_gpus=6, sharded=True,
                micro_batch=8, seq_len=3072)
    assert full.fits and full.total_gib < 80
    # the frozen reward model is loaded outside ZeRO/FSDP: a full copy on every GPU, however many there are
    one_gpu = plan("grpo", policy="Qwen/Qwen3-8B", reward="Qwen/Qwen3-8B", lora=False, n_gpus=1, micro_batch=8,
                   seq_len=3072)
    rm_key = "reward model (bf16, replicated)"
    assert full.components[rm_key] == one_gpu.components[rm_key] == pytest.approx(2 * arch_of("Qwen/Qwen3-8B").params / 2**30, rel=0.01)
    assert full.components["weights (bf16)"] == pytest.approx(one_gpu.components["weights (bf16)"] / 6, rel=0.01)
    with pytest.raises(PlanError, match=r"would need \d+\.\d GiB per GPU, more than the 80 GiB") as err:
        preflight("grpo", policy="Qwen/Qwen3-8B", reward="Qwen/Qwen3-8B", lora=False, n_gpus=1, micro_batch=8,
                  seq_len=3072)
    assert "trainable: grads + Adam + fp32" in str(err.value)
    # sharding divides the weights; LoRA shrinks the optimizer state to almost nothing
    unsharded = plan("rm", policy="Qwen/Qwen3-8B", n_gpus=8)
    sharded = plan("rm", policy="Qwen/Qwen3-8B", n_gpus=8, sharded=True)
    assert unsharded.components["weights (bf16)"] == pytest.approx(8 * sharded.components["weights (bf16)"], rel=0.01)
    assert unsharded.components["trainable: grads + Adam + fp32"] < 0.5
    # gradient checkpointing keeps only the layer inputs
    assert plan("rm", policy="Qwen/Qwen3-8B", micro_batch=6, seq_len=8192, gradient_checkpointing=True).total_gib < \
        plan("rm", policy="Qwen/Qwen3-8B", micro_batch=6, seq_len=8192, gradient_checkpointing=False).total_gib


@pytest.mark.subprocess
def test_shipped_scales_fit_and_launch_refuses_an_oversized_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "promedical", "plan", "--scale", "full"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count(": fits") == 2, out.stdout
    big = subprocess.run([sys.executable, "-m", "promedical", "launch", "grpo", "--workspace", str(tmp_path),
                          "-p", "prompts_per_step=16", "-p", "max_completion_length=8192"], cwd=ROOT,
                         capture_output=True, text=True)
    assert big.returncode == 1 and "does not fit in GPU memory; nothing was started" in big.stderr
    assert not (tmp_path / "policy").exists()
