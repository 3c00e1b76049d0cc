"""Scale profiles (configs/<scale>.yaml): a scale is a config file, never an `if` in the code.

A scale file has three keys: ``model`` (the model of every step whose config has a ``model`` field),
``steps`` (each step's parameters, addressed by its registry name: ``steps: {reward: {...}, grpo: {...}}``)
and ``launch`` (how ``promedical launch`` runs the training steps: processes, accelerate config, vLLM
server, GPU memory). ``Scale.config(step)`` builds a step's typed config from it, once, at the edge.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from promedical.core.ids import quote
from promedical.core.provenance import KIT_ROOT
from promedical.steps import STEPS

CONFIG_DIR = KIT_ROOT / "configs"
KEYS = ("model", "steps", "launch")


@dataclass(frozen=True)
class Scale:
    """One scale profile, read and checked by ``load_scale``."""

    path: Path
    model: str | None = None
    steps: dict = field(default_factory=dict)  # step name -> its parameters
    launch: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def with_model(self, model: str | None) -> "Scale":
        """The same scale with another top-level model (None: unchanged), e.g. ``promedical demo --model``."""
        return self if model is None else replace(self, model=model)

    def params(self, step: str) -> dict:
        """The parameters the scale gives ``step``: its ``steps:`` entry over the scale's ``model``."""
        base = {"model": self.model} if self.model is not None and "model" in STEPS[step].config.names() else {}
        return {**base, **self.steps.get(step, {})}

    def config(self, step: str, overrides: dict | None = None):
        """``step``'s typed config: the scale's parameters, then ``overrides`` (-p / --params) over them.
        ValueError (one line) for an unknown step or a value the config refuses."""
        if step not in STEPS:
            raise ValueError(f"unknown step {quote(step)} (known: {', '.join(STEPS)})")
        return STEPS[step].config.from_dict({**self.params(step), **(overrides or {})})


def load_scale(name_or_path: str = "demo") -> Scale:
    """The scale ``configs/<name>.yaml`` (or a YAML file's path); ValueError (one line) when its shape is
    wrong, FileNotFoundError (naming the known scales) when there is none. The steps' values are checked
    when a step's config is built (``Scale.config``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no scale config {path} (known: {known})")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: must be a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(KEYS)}; a step's "
                         f"parameters go under steps: {{STEP: {{...}}}})")
    steps = config.get("steps") or {}
    if not isinstance(steps, dict):
        raise ValueError(f"{path}: steps: must map a step name to its parameters, e.g. steps: {{grpo: {{steps: 6}}}}")
    for step, params in steps.items():
        if step not in STEPS:
            raise ValueError(f"{path}: steps: unknown step {quote(str(step))} (known: {', '.join(STEPS)})")
        if not isinstance(params, dict):
            raise ValueError(f"{path}: steps.{step}: must be a mapping of parameters, got {type(params).__name__}")
    model, launch = config.get("model"), config.get("launch") or {}
    if model is not None and not (isinstance(model, str) and model):
        raise ValueError(f"{path}: model: must be a model name or path, got {model!r}")
    if not isinstance(launch, dict):
        raise ValueError(f"{path}: launch: must be a mapping, got {type(launch).__name__}")
    return Scale(path, model, steps, launch)
