"""Scale profiles (configs/<scale>.yaml): a scale is a config file, never an `if` in the code.

A scale file has three keys: ``model`` (the model of every step whose config has a ``model`` field),
``steps`` (each step's parameters, addressed by its registry name: ``steps: {reward: {...}, grpo: {...}}``)
and ``launch`` (how ``promedical launch`` runs the training steps: processes, accelerate config, vLLM
server, GPU memory). ``Scale.config(step)`` builds a step's typed config from it, once, at the edge.

The file is read by a strict loader, in bounded time and memory: at most ``MAX_BYTES``, nesting at most
``MAX_DEPTH`` levels, at most ``MAX_NODES`` values, no anchors or aliases (``&x``/``*x``: an alias bomb
would expand beyond any bound), no repeated key in a mapping (JSON inputs refuse them too). Every
``launch:`` key is checked for its shape (``LAUNCH_KEYS``). Anything wrong is a ``ValueError`` of one
line naming the file, the field and the line: the CLI's ``--scale`` answers it with exit 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from promedical.core.ids import escape, quote
from promedical.core.provenance import KIT_ROOT
from promedical.steps import STEPS

CONFIG_DIR = KIT_ROOT / "configs"
KEYS = ("model", "steps", "launch")
MAX_BYTES = 1 << 20  # a scale file is a page of settings, not data
MAX_DEPTH = 32  # nesting levels of mappings and lists
MAX_NODES = 100_000  # values in one file
LAUNCH_KEYS = {  # launch: key -> what it must be
    "accelerate_config": "a path to an accelerate config (relative to the kit's root)",
    "num_processes": "an integer from 1 to 4096",
    "num_processes_per_step": "a mapping STEP -> an integer from 1 to 4096",
    "train_gpus": 'a GPU list such as "0,1,2" or a GPU number',
    "vllm_server": "a mapping with gpus (required), tensor_parallel_size and port",
    "gpu_memory_gib": "a number of GiB in (0, 4096]",
}
VLLM_SERVER_KEYS = ("gpus", "tensor_parallel_size", "port")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors/aliases or repeated keys, with nesting and size bounds."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = self._nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, "anchors and aliases (&name, *name) are not allowed in a scale file")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(event.start_mark, f"more than {MAX_NODES} values")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if repeated:
                    raise _Refused(key_node.start_mark, f"repeated key {(_short(key))}")
        return super().construct_mapping(node, deep=deep)


class _Refused(yaml.YAMLError):
    def __init__(self, mark, message):
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None


def _short(value, limit: int = 80) -> str:
    """A value from the file for a message: its repr, escaped, at most ``limit`` characters."""
    text = escape(repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


def read_yaml(path: Path):
    """The YAML document in ``path`` read strictly (see the module docstring); ValueError (one line) otherwise."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{path}: {size} bytes; a scale file is at most {MAX_BYTES} bytes")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path}: over {MAX_BYTES} bytes; a scale file is at most that")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except _Refused as exc:
        raise ValueError(f"{path}: line {exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {' '.join(str(exc).split())[:300]}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply") from None


def _count(value, lo: int = 1, hi: int = 4096) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _gpus(value) -> bool:
    if _count(value, 0, 4095):
        return True
    return isinstance(value, str) and bool(value) and all(_count(int(g), 0, 4095) if g.strip().isdigit() else False
                                                          for g in value.split(","))


def launch_problem(launch: dict, model: str | None, steps: dict) -> str | None:
    """What is wrong with a scale's ``launch:`` mapping ("launch.KEY: ..."), or None."""
    for key, value in launch.items():
        if key not in LAUNCH_KEYS:
            return f"launch: unknown key {(_short(key))} (known: {', '.join(LAUNCH_KEYS)})"
        ok = {"accelerate_config": lambda v: isinstance(v, str) and bool(v.strip()),
              "num_processes": _count,
              "num_processes_per_step": lambda v: isinstance(v, dict) and all(
                  k in STEPS and _count(n) for k, n in v.items()),
              "train_gpus": _gpus,
              "vllm_server": lambda v: isinstance(v, dict) and "gpus" in v and set(v) <= set(VLLM_SERVER_KEYS)
              and _gpus(v["gpus"]) and _count(v.get("tensor_parallel_size", 1), 1, 1024)
              and _count(v.get("port", 8000), 1, 65535),
              "gpu_memory_gib": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v) and 0 < v <= 4096}[key](value)
        if not ok:
            return f"launch.{key}: must be {LAUNCH_KEYS[key]}, got {_short(value)}"
    if "vllm_server" in launch and model is None and "model" not in steps.get("grpo", {}):
        return "model: required with launch.vllm_server (the model the rollout server serves)"
    return None


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
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: must be a mapping with keys {', '.join(KEYS)}, got {type(config).__name__}")
    unknown = sorted(escape(str(k))[:80] for k in set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)}; a step's "
                         f"parameters go under steps: {{STEP: {{...}}}})")
    steps = config.get("steps") or {}
    if not isinstance(steps, dict):
        raise ValueError(f"{path}: steps: must map a step name to its parameters, e.g. steps: {{grpo: {{steps: 6}}}}, "
                         f"got {type(steps).__name__}")
    for step, params in steps.items():
        if step not in STEPS:
            raise ValueError(f"{path}: steps: unknown step {(_short(step))} (known: {', '.join(STEPS)})")
        if not isinstance(params, dict):
            raise ValueError(f"{path}: steps.{step}: must be a mapping of parameters, got {type(params).__name__}")
        bad = next((k for k in params if not isinstance(k, str)), None)
        if bad is not None:
            raise ValueError(f"{path}: steps.{step}: parameter names are strings, got {_short(bad)}")
    model, launch = config.get("model"), config.get("launch") or {}
    if model is not None and not (isinstance(model, str) and model.strip()):
        raise ValueError(f"{path}: model: must be a model name or path, got {_short(model)}")
    if not isinstance(launch, dict):
        raise ValueError(f"{path}: launch: must be a mapping, got {type(launch).__name__}")
    problem = launch_problem(launch, model, steps)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return Scale(path, model, steps, launch)
