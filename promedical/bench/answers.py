"""The held-out benchmark: answer, grade, and compare models with statistics that hold up.

Each model (a base model, optionally with a LoRA adapter) answers every benchmark instruction
(greedy, so a re-run is reproducible). Every answer is graded against its rubric by the reward model
(criterion met when P > 0.5) and, where configured, by an LLM judge. Per answer: S1, S2, S3, safety
(no veto violated), the GRPO reward, the rubric score (share of criteria on the right side: met for
proficiency/bonus, not violated for veto) and the HealthBench-style score (points met / positive points;
per example it can be negative, the model-level mean is clipped to [0, 1] as HealthBench does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from promedical.core.files import write_jsonl
from promedical.core.rubric import Rubric


def policy_llm(model: str, adapter: str | Path | None = None):
    """A TransformersLLM for a model spec, with a LoRA adapter applied when given."""
    from promedical.models.llm import TransformersLLM
    from promedical.models.loading import load_model

    llm, tokenizer = load_model(model)
    if adapter is not None:
        from peft import PeftModel

        llm = PeftModel.from_pretrained(llm, str(adapter)).eval()
    return TransformersLLM(model, model=llm, tokenizer=tokenizer)


def generate_answers(models: Mapping[str, "tuple[str, str | Path | None] | Mapping"], rubrics: Sequence[Rubric], *,
           max_new_tokens: int = 256, out_path: str | Path | None = None, progress: bool = True,
           cache_dir: str | Path | None = None) -> list[dict]:
    """One greedy answer record per (model, instruction). ``models``: {name: (model spec, adapter or None)}
    for a local policy, or {name: source mapping} (``candidates.Source``) for any backend: a served model
    (``kind: openai``, e.g. vLLM serving the policy with its LoRA adapter via ``--lora-modules``), vLLM
    offline, or a file of existing answers (``kind: file``: every benchmark item must have one)."""
    from tqdm.auto import tqdm

    from promedical.models.llm import GenParams
    from promedical.models.sources import Source

    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    records = []
    for name, spec in tqdm(list(models.items()), desc="answering", disable=not progress):
        row = {"model": name, "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}}
        if isinstance(spec, Mapping):
            source = Source.from_dict(spec)
            row.update(spec=source.label(), adapter=None, source=source.to_dict())
            if source.kind == "file":
                texts = file_answers(source.path, rubrics)
                row["params"] = {}
            else:
                texts = source.make_llm(cache_dir).generate([r.messages for r in rubrics], params)
        else:
            model, adapter = spec
            llm = policy_llm(model, adapter)
            texts = llm.generate([r.messages for r in rubrics], params)
            row.update(spec=model, adapter=None if adapter is None else str(adapter))
            del llm
        records += [{**row, "prompt_id": r.id, "response_id": f"{name}:{r.id}", "response": t}
                    for r, t in zip(rubrics, texts)]
    if out_path is not None:
        write_jsonl(out_path, records)
    return records


def file_answers(path: str | Path, rubrics: Sequence[Rubric]) -> list[str]:
    """The answer of each rubric from a responses JSONL (one per prompt; a missing or repeated one is an error)."""
    from promedical.reward.candidates import read_responses

    by_prompt: dict[str, list[str]] = {}
    for row in read_responses(path, {r.id for r in rubrics}):
        by_prompt.setdefault(row["prompt_id"], []).append(row["response"])
    missing = [r.id for r in rubrics if r.id not in by_prompt]
    repeated = [pid for pid, texts in by_prompt.items() if len(texts) > 1]
    if missing or repeated:
        raise ValueError(f"{path}: the benchmark needs exactly one answer per item: "
                         + "; ".join(filter(None, [missing and f"missing for {', '.join(missing[:5])}",
                                                   repeated and f"several for {', '.join(repeated[:5])}"])))
    return [by_prompt[r.id][0] for r in rubrics]
