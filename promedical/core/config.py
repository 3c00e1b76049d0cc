"""One typed config per pipeline step.

The notebook's parameters cell, the scale YAML (``configs/<scale>.yaml``), ``-p KEY=VALUE`` /
``--params``, ``promedical step`` and ``promedical launch`` all fill the same dataclass; the step
function (``promedical/<stage>/step.py``) takes it. Every field carries its help text (``Config.help()``) and
``__post_init__`` checks every value, so an unknown key or a bad value is one line naming the field
and what it accepts (and, for an unknown key, the valid keys) before anything runs.

Shared pieces are defined once: the reward model's settings (``RMConfig``, the base of the ``rm-train``
step's config and the nested ``rm`` field of the reward step's) and GRPO's (``GRPOSettings``, the base of
the ``grpo`` step's config). A scale's top-level ``model:`` fills the ``model`` field of every step that
has one (``Scale.params`` in ``promedical/scale/profiles.py``).

**Nested configs.** A field whose type is another config class (the reward step's ``rm: RMConfig``) is
given as a mapping of that class's fields — ``rm: {max_steps: 12, lr: 5.0e-4}`` in a YAML, ``rm = {...}``
in a notebook — or one field at a time with a dotted key, ``-p rm.max_steps=12``. A partial mapping
overrides only the keys it names (over the field's default, or over the base config's value in
``from_dict(params, base)``); a dotted key wins over the same key in a mapping; an unknown nested key is
``parameter 'rm.max_step': unknown ...`` with the valid ``rm.*`` keys.

This module imports no torch: the CLI checks parameters in milliseconds.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, field, fields, replace
from typing import Any, ClassVar, Mapping

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


class ParameterError(ValueError):
    """Bad parameters of a config: one ``parameter NAME: message`` per problem, on one line."""

    def __init__(self, problems):
        self.problems = list(problems)  # "NAME: message" each
        super().__init__("; ".join(f"parameter {p}" for p in self.problems))

    def under(self, prefix: str) -> "ParameterError":
        """The same problems with their names inside a nested config (``max_steps`` -> ``rm.max_steps``)."""
        return ParameterError(f"{prefix}{p}" for p in self.problems)


class ConfigMixin:
    """Validation and construction shared by every config dataclass: the type of each field (from its
    annotation: an int where an int is declared, finite non-negative numbers, an existing file for a
    ``*_file`` field, an adapter directory for ``*_adapter``, a config or a mapping of its fields for a
    nested config) and then the class's own ``checks()``."""

    STEP: ClassVar[str] = ""

    def __post_init__(self):
        from promedical.core.params import value_problem

        hints = self.hints()
        nested = self.nested()
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in nested:
                try:
                    over = _field_default(type(self), f.name) if isinstance(value, Mapping) else None
                    setattr(self, f.name, _nested_value(nested[f.name], f.name, value, over, self.what()))
                except ParameterError as exc:
                    problems += exc.problems
                continue
            problem = value_problem(f.name, value, hints[f.name])
            if problem:
                problems.append(f"{f.name}: {problem}")
        if not problems:
            problems = list(self.checks())
        if problems:
            raise ParameterError(problems)

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
    def nested(cls) -> dict[str, type]:
        """{field: config class} of the fields that are configs themselves (the reward step's ``rm``)."""
        return {name: hint for name, hint in cls.hints().items()
                if isinstance(hint, type) and issubclass(hint, ConfigMixin)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def fold_dotted(cls, params: Mapping) -> dict:
        """The parameters with each dotted key of a nested config folded into its mapping, the dotted key
        winning: ``{"rm": {"lr": 1e-3, "max_steps": 5}, "rm.max_steps": 12}`` -> ``{"rm": {"lr": 1e-3,
        "max_steps": 12}}`` (what a notebook's ``rm = {...}`` takes). Other keys are left as they are."""
        nested = cls.nested()
        out = dict(params)
        for key, value in params.items():
            head, dot, rest = key.partition(".") if isinstance(key, str) else (key, "", "")
            if dot and rest and head in nested:
                given = out.get(head, {})
                given = given.to_dict() if isinstance(given, nested[head]) else given
                if isinstance(given, Mapping):  # (anything else is refused by name when the config is built)
                    out[head] = {**given, rest: value}
                    del out[key]
        return out

    @classmethod
    def from_dict(cls, params: Mapping, base=None):
        """Build from a parameter dict (over ``base``, a config of this class, when given): a nested config
        from a mapping of its fields and/or dotted keys (``rm.max_steps``), see the module doc. An unknown
        key is one line naming the valid keys."""
        if not isinstance(params, Mapping):
            raise ValueError(f"{cls.what()}: parameters must be a mapping, got {type(params).__name__}")
        if base is not None and not isinstance(base, cls):
            raise ValueError(f"{cls.what()}: config must be a {cls.__name__}, got {type(base).__name__}")
        return _build(cls, params, base, "", cls.what())

    @classmethod
    def from_namespace(cls, namespace: dict):
        """The config from a notebook's globals: every field the parameters cell (or papermill) set; a
        nested config's value is a mapping of its fields (``rm = {"max_steps": 12}``)."""
        return cls.from_dict({k: namespace[k] for k in cls.names() if k in namespace})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict:
        """{field: default}; a nested config's default is that config (``to_dict()`` gives its mapping)."""
        out = {}
        for f in fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
        return out

    def to_dict(self) -> dict:
        """Every field, a nested config as the mapping of its fields: ``from_dict(c.to_dict()) == c``."""
        return asdict(self)

    def project(self, cls):
        """The config of a base class (e.g. RMConfig of RMTrainStepConfig) from this one's values."""
        return cls(**{k: getattr(self, k) for k in cls.names()})


def _nested_value(cls, name: str, value, over, what: str):
    """A nested config field's value -> a config of ``cls``: a config as it is, a mapping over ``over``."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ParameterError([f"{name}: must be a mapping of {cls.__name__} fields, got {type(value).__name__}"])
    return _build(cls, value, over, f"{name}.", what)


def _build(cls, params: Mapping, base, prefix: str, what: str):
    """``cls`` from params over base (or the class defaults); ``prefix`` names a nested config in messages."""
    from promedical.core.ids import quote

    nested = cls.nested()
    flat = cls.fold_dotted(params)
    known = cls.names()
    unknown = sorted((k for k in flat if k not in known), key=str)
    if unknown:
        valid = ", ".join(prefix + n for n in sorted(known))
        raise ParameterError(f"{quote(prefix + str(k))}: unknown for {what} (known: {valid})" for k in unknown)
    for name in nested.keys() & flat.keys():
        over = getattr(base, name) if base is not None else _field_default(cls, name)
        flat[name] = _nested_value(nested[name], prefix + name, flat[name], over, what)
    try:
        return replace(base, **flat) if base is not None else cls(**flat)
    except ParameterError as exc:
        raise (exc.under(prefix) if prefix else exc) from None


def _field_default(cls, name: str):
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def one_of(name: str, value, allowed) -> list[str]:
    return [] if value in allowed else [f"{name}: must be one of {', '.join(map(str, allowed))}, got {value!r}"]


def at_least_one(obj, *names) -> list[str]:
    out = []
    for name in names:
        v = getattr(obj, name)
        if v is not None and v < 1:
            out.append(f"{name}: must be >= 1, got {v!r}")
    return out


def needs_base_url(obj) -> list[str]:
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
