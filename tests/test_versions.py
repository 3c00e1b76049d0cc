"""Version-drift guard: every TRL / PEFT / transformers / Unsloth / vLLM symbol the kit calls exists,
with the arguments the kit passes, in the pinned versions (docs/full_scale.md holds the tested matrix)."""
import inspect
import subprocess
import sys

import pytest
from conftest import ROOT


def params_of(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


TRL_SURFACE = """
import inspect
import trl.trainer.utils as trl_utils
from trl import GRPOTrainer
from promedical.policy.config import GRPOSettings
from promedical.policy.trl_args import grpo_config
from promedical.policy.trl_compat import TorchLogProb

def params_of(fn):
    return set(inspect.signature(fn).parameters)

args = grpo_config(GRPOSettings(group_size=2), "unused")  # builds a GRPOConfig with every field the kit sets
assert (args.beta, args.loss_type, args.use_cpu) == (0.04, "grpo", True)
assert {"model", "reward_funcs", "args", "train_dataset", "processing_class", "peft_config", "callbacks"} <= params_of(
    GRPOTrainer.__init__)
assert params_of(GRPOTrainer._generate) >= {"prompts"}  # timed by the kit's subclass
# reward functions receive log_metric (the kit logs S1/S2/S3 through it)
assert 'reward_kwargs["log_metric"]' in inspect.getsource(GRPOTrainer._calculate_rewards)
assert "frac_reward_zero_std" in inspect.getsource(GRPOTrainer)
# the fused LM head the kit swaps for a torch path on CPU
kernel = list(inspect.signature(trl_utils._ChunkedLogProbFunction.forward).parameters)[1:]  # drop ctx
assert kernel == list(inspect.signature(TorchLogProb.apply).parameters), kernel
print("ok")
"""


@pytest.mark.subprocess
def test_trl_grpo_surface():
    # in a fresh interpreter: once Unsloth is imported (another test does), it patches TRL's log-prob head
    out = subprocess.run([sys.executable, "-c", TRL_SURFACE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_peft_and_transformers_surface():
    import peft
    from transformers import DynamicCache
    from transformers.models.llama.modeling_llama import LlamaForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3ForCausalLM

    assert {"r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type"} <= set(
        peft.LoraConfig.__dataclass_fields__)
    assert callable(peft.get_peft_model) and callable(peft.set_peft_model_state_dict)
    assert "is_trainable" in params_of(peft.PeftModel.from_pretrained)
    assert list(inspect.signature(DynamicCache.__init__).parameters)[1] == "ddp_cache_data"  # scorer cache rows
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    assert callable(AttentionInterface.register) and callable(ALL_MASK_ATTENTION_FUNCTIONS.register)  # packed attention
    assert {"dropout", "scaling"} <= set(params_of(sdpa_attention_forward))
    for cls in (LlamaForCausalLM, Qwen3ForCausalLM):
        assert "logits_to_keep" in params_of(cls.forward)


@pytest.mark.subprocess
def test_unsloth_surface():
    # in a subprocess: importing unsloth patches transformers and TRL process-wide
    code = """
import inspect
from unsloth import FastLanguageModel
p = set(inspect.signature(FastLanguageModel.from_pretrained).parameters)
q = set(inspect.signature(FastLanguageModel.get_peft_model).parameters)
assert {"model_name", "max_seq_length", "dtype", "load_in_4bit"} <= p, p
assert {"r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_gradient_checkpointing", "random_state"} <= q, q
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_vllm_surface_or_pinned():
    """vLLM is a GPU-only extra: where it is installed its symbols are checked; everywhere, the pin
    is inside the range TRL 1.15 supports (0.21.0 - 0.31.0)."""
    import tomllib

    from packaging.version import Version

    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pin = next(x for x in gpu if x.startswith("vllm=="))
    assert Version("0.21.0") <= Version(pin.split("==")[1]) <= Version("0.31.0")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pytest.skip("vllm is not installed (GPU extra): its symbols are checked on a GPU machine")
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    assert {"max_tokens", "temperature", "top_p", "seed", "repetition_penalty", "structured_outputs"} <= set(
        SamplingParams.__struct_fields__ if hasattr(SamplingParams, "__struct_fields__") else params_of(SamplingParams))
    assert "json" in params_of(StructuredOutputsParams)
    assert {"use_tqdm", "chat_template_kwargs"} <= params_of(LLM.chat)
