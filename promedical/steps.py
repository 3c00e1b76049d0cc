"""The step registry: step name -> its typed config class -> its step function (and its notebook).

Every way of running a step goes through here: ``promedical step NAME`` and ``promedical launch NAME``
(which build the config once, at the edge, and call ``Step.run``), a scale's ``steps: {NAME: ...}``,
the demo and notebook runners (which find a step's notebook here), the notebooks (whose parameters
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
from promedical.core.config import ConfigMixin
from promedical.corpus.config import DataConfig
from promedical.corpus.step import step_data
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
    Step("data", DataConfig, step_data, "00"),
    Step("generate", GenerateStepConfig, step_generate, "01"),
    Step("review", ReviewStepConfig, step_review, "02"),
    Step("reward", RewardStepConfig, step_reward, "03"),
    Step("rm-train", RMTrainStepConfig, step_rm_train, None, distributed=True),
    Step("grpo", GRPOStepConfig, step_grpo, "04", distributed=True),
    Step("benchmark", BenchmarkStepConfig, step_benchmark, "05"),
)}


def notebook_step(notebook: str) -> Step | None:
    """The step a numbered notebook walks through ("03" -> the reward step), else None."""
    return next((s for s in STEPS.values() if s.notebook == notebook), None)


def markdown() -> str:
    """docs/parameters.md: every step's fields, defaults and help (`promedical params --markdown`)."""
    lines = ["# Step parameters", "",
             "Generated from each stage's `promedical/<stage>/config.py` by `promedical params --markdown`; the",
             "notebooks' parameters cells, the scale YAMLs (`configs/*.yaml`), `-p KEY=VALUE` / `--params` of `promedical step` and",
             "`promedical launch` all fill these dataclasses (a scale gives each step its parameters under",
             "`steps: {NAME: {...}}`). A scale's top-level `model:` fills `model` in every step that has one.", ""]
    for step in STEPS.values():
        cls, notebook = step.config, step.notebook
        lines += [f"## {step.name}", "", f"`{cls.__name__}`" + (f", notebook {notebook}" if notebook else "") + ": "
                  + " ".join((cls.__doc__ or "").split()), "", "| parameter | default | |", "|---|---|---|"]
        for name, default, text in parameter_rows(cls):
            default = "" if default is None else f"`{default}`"  # None: a nested config, its fields follow
            text = text.replace("|", "\\|")
            lines.append(f"| `{name}` | {default} | {text} |")
        lines.append("")
    return "\n".join(lines)


def parameter_rows(cls, prefix: str = "", values=None) -> list[tuple[str, str | None, str]]:
    """(name, default as JSON, help) of every field of a config class; a nested config (e.g. the reward
    step's ``rm``) is its own row (no default) followed by a row per field, ``rm.max_steps``, with the
    defaults the outer config gives it."""
    rows = []
    for name, default in (values or cls.defaults()).items():
        if isinstance(default, ConfigMixin):
            rows.append((prefix + name, None, cls.help()[name]))
            rows += parameter_rows(type(default), f"{prefix}{name}.", {k: getattr(default, k) for k in default.names()})
        else:
            rows.append((prefix + name, json.dumps(default), cls.help()[name]))
    return rows


def text_table(step: str) -> str:
    """A plain-text listing of a step's parameters (`promedical params STEP`)."""
    rows = [(n, d or "", h) for n, d, h in parameter_rows(STEPS[step].config)]
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    return "\n".join(f"{n:<{width[0]}}  {d:<{width[1]}}  {h}" for n, d, h in rows)
