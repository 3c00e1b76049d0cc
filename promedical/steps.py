"""The step registry: step name -> its typed config class -> its step function (and its notebook).

Every way of running a step goes through here: ``promedical step NAME`` and ``promedical launch NAME``
(which build the config once, at the edge, and call ``Step.run``), the notebooks (whose parameters
cell fills the same config class), and ``promedical params`` / ``docs/parameters.md``.
Importing this module imports no torch: each stage's ``step`` module loads its heavy libraries inside
its phases, so the CLI checks parameters in milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from promedical.bench.config import BenchmarkStepConfig
from promedical.bench.step import step_benchmark
from promedical.policy.config import GRPOStepConfig
from promedical.policy.step import step_grpo
from promedical.review.config import ReviewStepConfig
from promedical.review.step import step_review
from promedical.reward.config import RewardStepConfig, RMTrainStepConfig
from promedical.reward.step import step_reward, step_rm_train
from promedical.rubrics.config import GenerateStepConfig
from promedical.rubrics.step import step_generate


@dataclass(frozen=True)
class Step:
    """One step: its config class, the function that runs it (``run(workspace, config) -> dict``), the
    notebook that walks through it (rm-train has none: 03 trains in-process at small scale) and
    whether it trains (so runs under ``accelerate launch`` at full scale)."""

    name: str
    config: type
    run: Callable
    notebook: str | None = None
    distributed: bool = False


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("generate", GenerateStepConfig, step_generate, "01"),
    Step("review", ReviewStepConfig, step_review, "02"),
    Step("reward", RewardStepConfig, step_reward, "03"),
    Step("rm-train", RMTrainStepConfig, step_rm_train, None, distributed=True),
    Step("grpo", GRPOStepConfig, step_grpo, "04", distributed=True),
    Step("benchmark", BenchmarkStepConfig, step_benchmark, "05"),
)}
STEP_CONFIGS: dict[str, type] = {name: s.config for name, s in STEPS.items()}
NOTEBOOK_STEPS = {s.notebook: name for name, s in STEPS.items() if s.notebook}
STEP_NOTEBOOKS = {name: notebook for notebook, name in NOTEBOOK_STEPS.items()}


def step_config(step: str, params: dict | None = None, base=None):
    """The typed config of a step from a parameter dict; ValueError (one line) for any problem."""
    from promedical.core.ids import quote

    if step not in STEP_CONFIGS:
        raise ValueError(f"unknown step {quote(step)} (known: {', '.join(STEP_CONFIGS)})")
    return STEP_CONFIGS[step].from_dict(params or {}, base=base)


def markdown() -> str:
    """docs/parameters.md: every step's fields, defaults and help (`promedical params --markdown`)."""
    lines = ["# Step parameters", "",
             "Generated from each stage's `config.py` (`promedical/<stage>/config.py`) by `promedical params --markdown`; the notebooks' parameters",
             "cells, the scale YAMLs (`configs/*.yaml`), `-p KEY=VALUE` / `--params` of `promedical step` and",
             "`promedical launch` all fill these dataclasses. A scale's top-level `model:` fills `model` in every",
             "step that has one.", ""]
    for step, cls in STEP_CONFIGS.items():
        notebook = STEP_NOTEBOOKS.get(step)
        lines += [f"## {step}", "", f"`{cls.__name__}`" + (f", notebook {notebook}" if notebook else "") + ": "
                  + " ".join((cls.__doc__ or "").split()), "", "| parameter | default | |", "|---|---|---|"]
        for name, default in cls.defaults().items():
            text = cls.help()[name].replace("|", "\\|")
            lines.append(f"| `{name}` | `{json.dumps(default)}` | {text} |")
        lines.append("")
    return "\n".join(lines)


def text_table(step: str) -> str:
    """A plain-text listing of a step's parameters (`promedical params STEP`)."""
    cls = STEP_CONFIGS[step]
    rows = [(name, json.dumps(default), cls.help()[name]) for name, default in cls.defaults().items()]
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    return "\n".join(f"{n:<{width[0]}}  {d:<{width[1]}}  {h}" for n, d, h in rows)
