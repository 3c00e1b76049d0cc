"""Stage 01's typed config (rubric generation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from promedical.core.config import BACKENDS, MODEL_HELP, ConfigMixin, at_least_one, needs_base_url, one_of, option


# ---------------------------------------------------------------- the steps
@dataclass
class GenerateStepConfig(ConfigMixin):
    """01: draft an instruction-specific rubric for training instructions of the workspace."""

    STEP: ClassVar[str] = "generate"
    model: str = option("the rubric writer: " + MODEL_HELP, "embedded")
    backend: str = option("LLM backend: " + " | ".join(BACKENDS), "transformers")
    base_url: str | None = option("OpenAI-compatible endpoint for backend=openai, e.g. http://127.0.0.1:8000/v1", None)
    n_instructions: int = option("training instructions to draft a rubric for (shuffled with seed)", 3)
    seed: int = option("seed of the shuffle and of sampling", 0)
    constrained: bool = option("decode into the draft JSON schema (transformers: a grammar; servers: json_schema)", True)
    few_shot_k: int = option("reviewed or reference rubrics shown as examples", 1)
    max_new_tokens: int = option("token budget of one draft", 512)
    progress: bool = option("progress bars", True)

    def checks(self):
        yield from one_of("backend", self.backend, BACKENDS)
        yield from needs_base_url(self)
        yield from at_least_one(self, "max_new_tokens")
