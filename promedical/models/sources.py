"""Source specs: where candidates, answers or a judge come from — a local model (transformers, vLLM),
an OpenAI-compatible endpoint, or a file — parsed and checked the way the steps build them."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

from promedical.core.params import bound_problem
from promedical.models.llm import LLM, GenParams, make_llm

KINDS = ("transformers", "vllm", "openai", "file")


MODEL_KINDS = KINDS[:3]


@dataclass(frozen=True)
class Source:
    """Where candidates (or a judge's answers) come from, with the decoding parameters to use."""

    kind: str  # "transformers" | "vllm" | "openai" | "file"
    model: str | None = None  # a model spec (transformers, vllm) or the served model's name (openai)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: name of the environment variable holding the key (never the key)
    path: str | None = None  # file: JSONL with prompt_id and response (response_id optional)
    name: str | None = None  # a short label for response ids and reports; default derived from model/path
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: the run's seed plus this source's position
    concurrency: int = 8  # openai: requests in flight
    rate_limit: float | None = None  # openai: requests per second
    timeout: float = 120.0  # openai: seconds per attempt
    deadline: float | None = None  # openai: seconds per request, retries included (None: the backend's 600 s)

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"source {self.label()!r}: {msg}")

        if self.kind not in KINDS:
            raise ValueError(f"source kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for key in ("model", "base_url", "api_key_env", "path", "name"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                bad(f"{key} must be a non-empty string, got {value!r}")
        if self.kind == "file":
            if not self.path:
                bad("a file source needs path (a JSONL of prompt_id, response)")
        elif not self.model:
            bad(f"a {self.kind} source needs model")
        if self.kind == "openai" and not (self.base_url or "").startswith(("http://", "https://")):
            bad(f"an openai source needs base_url starting with http:// or https://, got {self.base_url!r}")
        if self.kind != "openai" and self.base_url:
            bad("base_url is for openai sources only")
        for key, lo, hi in (("temperature", 0.0, 10.0), ("top_p", 0.0, 1.0), ("repetition_penalty", 0.0, 10.0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not lo <= value <= hi or (key != "temperature" and value == 0):
                bad(f"{key} must be a number in {'[' if key == 'temperature' else '('}{lo:g}, {hi:g}], got {value!r}")
        for key, lo in (("max_new_tokens", 1), ("concurrency", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                bad(f"{key} must be an integer >= {lo}, got {value!r}")
            if bound_problem(key, value):
                bad(f"{key} {bound_problem(key, value)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            bad(f"seed must be an integer, got {self.seed!r}")
        for key in ("rate_limit", "deadline", "timeout"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                bad(f"{key} must be a number > 0, got {value!r}")
            if value is not None and bound_problem(key, value):
                bad(f"{key} {bound_problem(key, value)}")

    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "file":
            return f"file:{Path(self.path or '?').stem}"
        return f"{self.kind}:{self.model}"

    @classmethod
    def from_dict(cls, obj: Mapping) -> "Source":
        """Build from a plain dict (YAML, notebook parameter); unknown keys are one line naming the valid ones."""
        if isinstance(obj, Source):
            return obj
        if not isinstance(obj, Mapping):
            raise ValueError(f"a source must be a mapping like {{'kind': 'openai', 'model': ...}}, got {obj!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(obj) - set(valid))
        if unknown:
            raise ValueError(f"unknown source key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(valid)}")
        if "kind" not in obj:
            raise ValueError(f"a source needs kind (one of {', '.join(KINDS)})")
        return cls(**obj)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def params(self, seed: int) -> GenParams:
        return GenParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                         seed=seed, repetition_penalty=self.repetition_penalty)

    def make_llm(self, cache_dir: str | Path | None = None) -> LLM:
        """The backend this source names (a file source has none)."""
        if self.kind == "file":
            raise ValueError(f"source {self.label()!r} is a file of responses, not a model")
        kwargs = {}
        if self.kind == "openai":
            key = os.environ.get(self.api_key_env) if self.api_key_env else None
            if self.api_key_env and not key:
                raise ValueError(f"source {self.label()!r}: environment variable {self.api_key_env} is not set")
            kwargs = dict(api_key=key, concurrency=self.concurrency, rate_limit=self.rate_limit,
                          timeout=self.timeout, deadline=self.deadline)
        return make_llm(self.kind, self.model, base_url=self.base_url, cache_dir=cache_dir, **kwargs)


def llm_for(spec: "str | Mapping | Source", cache_dir: str | Path | None = None) -> LLM:
    """A backend from a model spec string (local transformers, as before) or a source dict/Source
    (e.g. a judge on an OpenAI-compatible server: {"kind": "openai", "model": ..., "base_url": ...})."""
    if isinstance(spec, str):
        return make_llm("transformers", spec, cache_dir=cache_dir)
    return Source.from_dict(spec).make_llm(cache_dir)


def spec_label(spec: "str | Mapping | Source") -> str:
    """A short printable name for a model spec or a source (for cards and provenance)."""
    return spec if isinstance(spec, str) else Source.from_dict(spec).label()


def parse_sources(specs: Sequence[Mapping | Source]) -> list[Source]:
    """A list of source dicts (or Sources) -> Sources; labels must be unique (they name response ids)."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Sequence):
        raise ValueError("sources must be a list of source mappings")
    if not specs:
        raise ValueError("sources is empty: give at least one (kind: transformers | vllm | openai | file)")
    out = []
    for n, spec in enumerate(specs, start=1):
        try:
            out.append(Source.from_dict(spec))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sources[{n}]: {exc}") from None
    labels = [s.label() for s in out]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ValueError(f"two sources share the label {repeated[0]!r}: give each a distinct name")
    return out


def source_problems(name: str, spec) -> list[str]:
    """A source mapping (candidates.Source) checked the way the step will build it."""

    try:
        Source.from_dict(spec)
    except (TypeError, ValueError) as exc:
        return [f"{name}: {exc}"]
    return []
