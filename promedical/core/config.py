"""One typed config per pipeline step.

The notebook's parameters cell, the scale YAML (``configs/<scale>.yaml``), ``-p KEY=VALUE`` /
``--params``, ``promedical step`` and ``promedical launch`` all fill the same dataclass; the step
function (``pipeline.step_*``) takes it. Every field carries its help text (``Config.help()``) and
``__post_init__`` checks every value, so an unknown key or a bad value is one line naming the field
and what it accepts (and, for an unknown key, the valid keys) before anything runs.

Shared pieces are defined once: the reward model's settings (``RMConfig``, also the base of the
``rm-train`` step's config and the source of notebook 03's ``rm_*`` defaults) and GRPO's
(``GRPOSettings``, the base of the ``grpo`` step's config). A scale's top-level ``model:`` fills the
``model`` field of every step that has one (``launch.step_params``).

This module imports no torch: the CLI checks parameters in milliseconds.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, field, fields, replace
from typing import Any, ClassVar

BACKENDS = ("transformers", "vllm", "openai")


RM_BACKENDS = ("peft", "unsloth")


TRACKERS = ("none", "tensorboard", "trackio", "wandb")


def option(text: str, default=MISSING, factory=MISSING):
    """A dataclass field with its help text."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def tracker_list(report_to) -> list[str]:
    """``report_to`` (a name or a list) -> the trackers to use; unknown names are refused."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ValueError(f"report_to: unknown tracker(s) {bad}; known: {', '.join(TRACKERS)}")
    return [n for n in names if n != "none"]


class ConfigMixin:
    """Validation and construction shared by every config dataclass: the type of each field (from its
    annotation: an int where an int is declared, finite non-negative numbers, an existing file for a
    ``*_file`` field, an adapter directory for ``*_adapter``) and then the class's own ``checks()``."""

    STEP: ClassVar[str] = ""

    def __post_init__(self):
        from promedical.core.params import value_problem

        hints = self.hints()
        problems = []
        for f in fields(self):
            problem = value_problem(f.name, getattr(self, f.name), hints[f.name])
            if problem:
                problems.append(f"{f.name}: {problem}")
        if not problems:
            problems = list(self.checks())
        if problems:
            raise ValueError("; ".join(f"parameter {p}" for p in problems))

    def checks(self):  # overridden: yields "field: message" for values of the right type but out of range
        return ()

    @classmethod
    def what(cls) -> str:
        return f"step {cls.STEP}" if cls.STEP else cls.__name__

    @classmethod
    def hints(cls) -> dict:
        """{field: type hint}"""
        hints = typing.get_type_hints(cls)
        return {f.name: hints.get(f.name, Any) for f in fields(cls)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, params: dict, base=None):
        """Build from a parameter dict (over ``base``, a config of this class, when given); an unknown
        key is one line naming the valid keys."""
        if not isinstance(params, dict):
            raise ValueError(f"{cls.what()}: parameters must be a mapping, got {type(params).__name__}")
        unknown = sorted(set(params) - set(cls.names()))
        if unknown:
            from promedical.core.ids import quote

            raise ValueError("; ".join(f"parameter {quote(k)}: unknown for {cls.what()} (known: "
                                       f"{', '.join(sorted(cls.names()))})" for k in unknown))
        if base is not None:
            if not isinstance(base, cls):
                raise ValueError(f"{cls.what()}: config must be a {cls.__name__}, got {type(base).__name__}")
            return replace(base, **params)
        return cls(**params)

    @classmethod
    def from_namespace(cls, namespace: dict):
        """The config from a notebook's globals: every field the parameters cell (or papermill) set."""
        return cls.from_dict({k: namespace[k] for k in cls.names() if k in namespace})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        out = {}
        for f in fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def project(self, cls):
        """The config of a base class (e.g. RMConfig of RMTrainStepConfig) from this one's values."""
        return cls(**{k: getattr(self, k) for k in cls.names()})


def _choice(name: str, value, allowed) -> list[str]:
    return [] if value in allowed else [f"{name}: must be one of {', '.join(map(str, allowed))}, got {value!r}"]


def _positive(obj, *names) -> list[str]:
    out = []
    for name in names:
        v = getattr(obj, name)
        if v is not None and v < 1:
            out.append(f"{name}: must be >= 1, got {v!r}")
    return out


def _needs_base_url(obj) -> list[str]:
    if obj.backend == "openai" and not obj.base_url:
        return ["base_url: backend=openai needs base_url, e.g. http://127.0.0.1:8000/v1"]
    return []


MODEL_HELP = "model: embedded (the kit's SmolLM2-135M-Instruct), a Hugging Face id or a local path"


def build(cls, config, params: dict):
    """What a step function receives -> its config: a config, parameters, or a config plus overrides."""
    if config is None:
        return cls.from_dict(params)
    if isinstance(config, dict):
        return cls.from_dict({**config, **params})
    return cls.from_dict(params, base=config)
