"""Stage 04 as phases: the training prompts, the reward function, GRPO training, the hacking monitor;
``step_grpo`` composes them. Notebook 04 calls the same functions, one cell each.

Training resumes from its newest complete checkpoint (``resume``), so re-running a finished training
costs only loading the policy; the other phases are cheap.
"""
from __future__ import annotations

import json
from pathlib import Path

from promedical.core.config import build
from promedical.core.files import write_json
from promedical.core.provenance import stamp
from promedical.core.workspace import Workspace
from promedical.models.llm import make_llm
from promedical.policy.config import GRPOStepConfig
from promedical.reward.inputs import load_reward_model
from promedical.rubrics.selection import training_rubrics


def training_prompts(workspace, config: GRPOStepConfig) -> list:
    """The rubrics GRPO trains on: the workspace's training rubrics (approved revisions where reviewed),
    ``n_instructions`` of them (null: all), shuffled by ``seed``."""
    return training_rubrics(workspace, config.n_instructions, config.seed)


def reward_adapter(workspace, config: GRPOStepConfig) -> Path:
    """The frozen reward model's adapter: ``reward_adapter``, else the one 03 trained in the workspace."""
    return Path(config.reward_adapter) if config.reward_adapter else Workspace.of(workspace).reward_adapter


def reward_function(workspace, config: GRPOStepConfig, rubrics: list):
    """TRL's reward function for ``rubrics``: the frozen reward model (``reward_adapter``) scores every
    criterion of a rollout, the tiers combine by the hierarchical formula (``alpha``, ``headroom``, ``lam``,
    ablation ``mode``). A ``policy.reward.RubricReward``."""
    from promedical.policy.reward import RubricReward

    rm = load_reward_model(workspace, reward_adapter(workspace, config))
    return RubricReward(rm.score_batch, {r.id: r for r in rubrics}, config.reward_config(), config.mode)


def monitor_prompts(config: GRPOStepConfig, rubrics: list) -> list:
    """The hacking monitor's fixed probe prompts: the ``n_monitor_prompts`` most machine-checkable rubrics."""
    from promedical.policy.monitor import probe_rubrics

    return probe_rubrics(rubrics, config.n_monitor_prompts)


def train(workspace, config: GRPOStepConfig, rubrics: list, reward) -> dict:
    """GRPO on ``rubrics`` rewarded by ``reward`` (``reward_function``); resumes from the newest complete
    checkpoint when ``resume``. Writes policy/adapter, policy/log.json, policy/curves.html (drawn live in a
    notebook) and policy/summary.json; returns the summary (steps, time split, first and last reward
    components). With ``n_monitor_prompts`` > 0 the hacking monitor answers its probe prompts every
    ``monitor_every`` steps during training; ``monitor`` reads its rows back."""
    from promedical.policy.monitor import hacking_monitor
    from promedical.policy.plots import live_curves
    from promedical.policy.training import train_policy

    ws = Workspace.of(workspace)
    callbacks = [live_curves(ws.policy_curves, display=config.live)]
    probes = monitor_prompts(config, rubrics)
    if probes:
        judge = make_llm("transformers", config.monitor_judge, cache_dir=ws.llm_cache) if config.monitor_judge else None
        callbacks.append(hacking_monitor(reward, probes, every=config.monitor_every,
                                         max_new_tokens=config.monitor_max_new_tokens, judge=judge,
                                         html_path=ws.policy_monitor))
    summary = train_policy(config.settings(), rubrics, reward, ws.policy, resume=config.resume, callbacks=callbacks)
    summary["reward_model"] = str(reward_adapter(ws, config))
    summary["provenance"] = stamp(config=config.to_dict(), seed=config.seed)
    write_json(ws.policy_summary, summary)
    return summary


def monitor(workspace, config: GRPOStepConfig, rubrics: list) -> dict | None:
    """The hacking monitor's summary from the training log: its probe prompts and one row per measured
    step (training reward, RM vs independent rubric score, gap, veto rates, coverage). Redraws
    policy/monitor.html and records the summary under "monitor" in policy/summary.json. None when the
    monitor is off (``n_monitor_prompts=0``)."""
    from promedical.core.plots import write_html
    from promedical.policy.monitor import monitor_rows
    from promedical.policy.plots import monitor_figure

    if config.n_monitor_prompts == 0:
        return None
    ws = Workspace.of(workspace)
    rows = monitor_rows(json.loads(ws.policy_log.read_text(encoding="utf-8"))["history"])
    if rows:
        write_html(monitor_figure(rows), ws.policy_monitor)
    block = {"every": config.monitor_every, "prompts": [r.id for r in monitor_prompts(config, rubrics)],
             "judge": config.monitor_judge, "rows": rows, "html": str(ws.policy_monitor) if rows else None}
    write_json(ws.policy_summary, {**json.loads(ws.policy_summary.read_text(encoding="utf-8")), "monitor": block})
    return block


def step_grpo(workspace=None, config: GRPOStepConfig | None = None, **params) -> dict:
    """04: GRPO on the policy, rewarded by the frozen reward model through the hierarchical formula
    (``config`` and/or ``params``: GRPOStepConfig = GRPOSettings + the step's own fields):
    ``training_prompts`` -> ``reward_function`` -> ``train`` -> ``monitor``. Returns policy/summary.json."""
    c = build(GRPOStepConfig, config, params)
    ws = Workspace.of(workspace)
    rubrics = training_prompts(ws, c)
    reward = reward_function(ws, c, rubrics)
    summary = train(ws, c, rubrics, reward)
    block = monitor(ws, c, rubrics)
    return summary if block is None else {**summary, "monitor": block}
