"""Reward-hacking monitor for GRPO: every N steps a fixed set of probe prompts is answered (greedy,
short) and graded twice — by the training reward model and by an independent grader (machine checks,
plus an LLM judge when given) — and the gap is logged.

Per check, over the probe answers: the GRPO reward the training RM gives; on the criteria the
independent grader could grade, the RM's expected rubric score (mean P(good side)) and the independent
rubric score (share on the good side); ``gap`` = RM minus independent (a gap that grows while the reward
rises is the signature of reward hacking; the paper's no-veto ablation — proficiency up, safety down —
shows as the RM's veto rate falling below the independent one). Rows go into the trainer's
``log_history`` (so the policy's log.json and its checkpoints keep them) and into a plotly figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from promedical.core.rubric import Rubric
from promedical.core.scoring import is_good

PREFIX = "monitor/"


def probe_rubrics(rubrics: Sequence[Rubric], n: int) -> list[Rubric]:
    """The ``n`` rubrics with the most machine-checkable criteria (ties in the given order): the fixed probe set."""
    order = sorted(range(len(rubrics)), key=lambda i: (-sum(c.check is not None for c in rubrics[i].criteria), i))
    return [rubrics[i] for i in order[:n]]


def grade_probe_answers(reward, rubrics: Sequence[Rubric], texts: Sequence[str], judge=None) -> dict:
    """One monitor row (without the step) for answers ``texts`` to ``rubrics``.

    ``reward``: a ``grpo.RubricReward`` (its scorer is the training RM); ``judge``: an optional LLM for
    the criteria without a machine check."""
    from promedical.reward.evaluation import sigmoid
    from promedical.reward.judge import grade_responses, judgments_to_grades

    answers = [{"prompt_id": r.id, "response_id": f"probe{i}:{r.id}", "response": t}
               for i, (r, t) in enumerate(zip(rubrics, texts))]
    grades = judgments_to_grades(grade_responses(rubrics, answers, judge, progress=False))
    rewards = reward.scorer([(r.messages, t, [(c.tier, c.text) for c in r.criteria]) for r, t in zip(rubrics, texts)])
    trained_on = rewards if reward.mode != "scalar" else \
        reward.scorer([(r.messages, t, reward.criteria(r)) for r, t in zip(rubrics, texts)])
    train = [reward.components(r, x)["reward"] for r, x in zip(rubrics, trained_on)]
    rm_scores, ind_scores, rm_veto, ind_veto = [], [], [], []
    known_total = total = 0
    for r, a, rs in zip(rubrics, answers, rewards):
        met = grades[(r.id, a["response_id"])]
        known = [(c, x) for c, x in zip(r.criteria, rs) if met.get(c.id) is not None]
        total += len(r.criteria)
        known_total += len(known)
        if known:
            rm_scores.append(sum(sigmoid(x) for _, x in known) / len(known))  # r: log-odds of the good side
            ind_scores.append(sum(is_good(c.tier, met[c.id]) for c, _ in known) / len(known))
        vetoes = [(c, x) for c, x in known if c.tier == "veto"]
        if vetoes:
            rm_veto.append(float(any(sigmoid(-x) > 0.5 for _, x in vetoes)))
            ind_veto.append(float(any(met[c.id] for c, _ in vetoes)))
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    rm, ind = mean(rm_scores), mean(ind_scores)
    return {f"{PREFIX}train_reward": mean(train), f"{PREFIX}rm_score": rm, f"{PREFIX}independent_score": ind,
            f"{PREFIX}gap": None if rm is None or ind is None else rm - ind,
            f"{PREFIX}rm_veto_rate": mean(rm_veto), f"{PREFIX}independent_veto_rate": mean(ind_veto),
            f"{PREFIX}coverage": known_total / total if total else None, f"{PREFIX}n_prompts": len(rubrics),
            f"{PREFIX}answers": list(texts)}


def monitor_rows(history: Sequence[dict]) -> list[dict]:
    """The monitor's rows of a GRPO log (``log_history``), without the prefix and the answers."""
    return [{k.removeprefix(PREFIX): v for k, v in h.items() if k != f"{PREFIX}answers"}
            for h in history if f"{PREFIX}gap" in h]


def hacking_monitor(reward, rubrics: Sequence[Rubric], *, every: int = 3, max_new_tokens: int = 48, judge=None,
                    html_path: str | Path | None = None):
    """A TrainerCallback running ``grade_probe_answers`` on ``rubrics`` after every ``every``-th step
    (greedy answers of at most ``max_new_tokens`` tokens from the policy being trained). The RNG state
    and the model's train/eval mode are restored, so the monitor does not change the training run."""
    from transformers import TrainerCallback

    if every < 1:
        raise ValueError(f"monitor every must be >= 1, got {every}")

    class HackingMonitor(TrainerCallback):
        def __init__(self):
            self.rows: list[dict] = []

        def answer(self, model, tokenizer) -> list[str]:
            import torch

            from promedical.models.llm import GenParams, TransformersLLM

            side, was_training = tokenizer.padding_side, model.training
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            try:
                with torch.random.fork_rng(devices=devices):
                    model.eval()
                    llm = TransformersLLM("policy", model=model, tokenizer=tokenizer, batch_size=len(rubrics))
                    return llm.generate([r.messages for r in rubrics], GenParams(max_new_tokens=max_new_tokens, temperature=0.0))
            finally:
                tokenizer.padding_side = side
                model.train(was_training)

        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            if state.global_step % every or model is None or processing_class is None:
                return
            if any(r.get("step") == state.global_step and f"{PREFIX}gap" in r for r in state.log_history):
                return  # already measured (a resumed run replays nothing, but be safe)
            row = {"step": state.global_step, **grade_probe_answers(reward, rubrics, self.answer(model, processing_class), judge)}
            state.log_history.append(row)
            self.rows.append(row)
            if html_path is not None:
                from promedical.core.plots import write_html
                from promedical.policy.plots import monitor_figure

                write_html(monitor_figure(monitor_rows(state.log_history)), html_path)

    return HackingMonitor()
