"""Stage 05's typed config (the benchmark)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from promedical.core.config import MODEL_HELP, ConfigMixin, at_least_one, option
from promedical.models.sources import source_problems


@dataclass
class BenchmarkStepConfig(ConfigMixin):
    """05: base vs aligned policy on the held-out benchmark, graded independently of the training reward."""

    STEP: ClassVar[str] = "benchmark"
    model: str = option("the base policy (aligned = this + the policy adapter): " + MODEL_HELP, "embedded")
    policy_adapter: str | None = option("the aligned policy's adapter (null: <workspace>/policy/adapter when present)",
                                        None)
    reward_adapter: str | None = option("reward-model adapter (null: <workspace>/reward/adapter)", None)
    extra_models: dict = option("more rows: {name: [model spec or path, adapter dir or null]} or {name: a source "
                                "mapping} for any backend, e.g. {kind: openai, model: aligned, base_url: ...} (vLLM serving "
                                "the policy with its LoRA adapter) or {kind: file, path: answers.jsonl}", factory=dict)
    bench_file: str | None = option("a rubric JSONL to benchmark instead of the workspace's bench split "
                                    "(e.g. from `promedical healthbench import`)", None)
    n_bench: int | None = option("the first n benchmark items (null: all)", None)
    max_new_tokens: int = option("tokens per answer", 256)
    judge_model: str | dict | None = option(
        "the independent LLM judge: a model spec or a source mapping (any backend); null: machine checks and gold "
        "labels only", None)
    judge_explanation_chars: int = option("characters of explanation the judge writes before its verdict", 60)
    n_judge: int | None = option("the judge grades the answers to the first n items (null: all; slow on CPU)", None)
    n_reference: int = option("gold-labelled candidates graded by every grader (the reference row)", 8)
    n_probe: int = option("good gold responses for the gameability probes (0: off)", 8)
    png: bool = option("also write PNG figures (kaleido)", True)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from at_least_one(self, "n_bench", "max_new_tokens")
        for name, row in self.extra_models.items():
            if isinstance(row, dict):
                yield from source_problems(f"extra_models: {name!r}", row)
            elif not (isinstance(row, (list, tuple)) and len(row) == 2 and isinstance(row[0], str)
                      and (row[1] is None or isinstance(row[1], str))):
                yield f"extra_models: {name!r} must be [model spec, adapter dir or null] or a source mapping"
        if isinstance(self.judge_model, dict):
            yield from source_problems("judge_model", self.judge_model)
