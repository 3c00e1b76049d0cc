"""Stage 04 as phases: the reward function, GRPO training, the hacking monitor; ``step_grpo`` composes them."""
from __future__ import annotations

from promedical.core.config import build
from promedical.core.files import write_json
from promedical.core.provenance import stamp
from promedical.core.workspace import Workspace
from promedical.models.llm import make_llm
from promedical.policy.config import GRPOStepConfig
from promedical.reward.step import load_reward_model
from promedical.rubrics.selection import training_rubrics


def step_grpo(workspace=None, config: GRPOStepConfig | None = None, **params) -> dict:
    """04: GRPO on the policy, rewarded by the frozen reward model through the hierarchical formula
    (``config`` and/or ``params``: GRPOStepConfig = GRPOSettings + the step's own fields).

    Writes policy/adapter, policy/log.json and policy/curves.html. Reward-hacking monitor
    (``promedical.policy.monitor``): every ``monitor_every`` steps the ``n_monitor_prompts`` training prompts with
    the most machine checks are answered greedily (``monitor_max_new_tokens``) and graded by the RM and by
    the checks (+ the LLM ``monitor_judge`` when set); rows in policy/log.json, figure in
    policy/monitor.html. ``n_monitor_prompts=0`` turns it off.
    """
    from promedical.policy.monitor import PREFIX, hacking_monitor, probe_rubrics
    from promedical.policy.plots import live_curves
    from promedical.policy.reward import RubricReward
    from promedical.policy.training import train_policy

    c = build(GRPOStepConfig, config, params)
    ws = Workspace.of(workspace)
    settings = c.settings()
    rm = load_reward_model(ws, c.reward_adapter)
    rubrics = training_rubrics(ws, c.n_instructions, c.seed)
    out = ws / "policy"
    callbacks = [live_curves(out / "curves.html", display=c.live)]
    if c.n_monitor_prompts > 0:
        judge = make_llm("transformers", c.monitor_judge, cache_dir=ws / "cache" / "llm") if c.monitor_judge else None
        probes = probe_rubrics(rubrics, c.n_monitor_prompts)
        callbacks.append(hacking_monitor(RubricReward(rm.score_batch, {r.id: r for r in probes}, settings.reward_config(),
                                                      settings.mode), probes, every=c.monitor_every,
                                         max_new_tokens=c.monitor_max_new_tokens, judge=judge,
                                         html_path=out / "monitor.html"))
    summary = train_policy(settings, rubrics, rm.score_batch, out, resume=c.resume, callbacks=callbacks)
    if c.n_monitor_prompts > 0:
        import json

        history = json.loads((out / "log.json").read_text(encoding="utf-8"))["history"]
        rows = [{k.removeprefix(PREFIX): v for k, v in h.items() if k != f"{PREFIX}answers"}
                for h in history if f"{PREFIX}gap" in h]
        summary["monitor"] = {"every": c.monitor_every, "prompts": [r.id for r in probes], "judge": c.monitor_judge,
                              "rows": rows, "html": str(out / "monitor.html") if rows else None}
    summary["reward_model"] = str(c.reward_adapter or ws / "reward" / "adapter")
    summary["provenance"] = stamp(config=c.to_dict(), seed=c.seed)
    write_json(out / "summary.json", summary)
    return summary
