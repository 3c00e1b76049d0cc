"""Time per GRPO step split into generation / reward / update, and the reward's share of the step.

    python benchmarks/grpo_step.py [--model embedded] [--steps 6] [--group-size 4] [--length 48]

Runs real GRPO steps (TRL GRPOTrainer, LoRA policy) rewarded by a LoRA reward model on the same
backbone; the reward model is untrained here because scoring costs the same either way. The reward
model scores a step's rollouts on shared prefixes (``CriteriaRewardModel.score_batch``: the conversation
once per group; then, on CPU, each rollout's response and all its criterion suffixes in one packed row
on the conversation's cache). Wall-clock splits on a CPU shared with other jobs vary with
their load: compare runs made at the same time. It also prints the tokens the reward model read per
rollout and per step (deterministic for given rollouts).
Target: the reward takes <= 20% of the step.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--length", type=int, default=48, help="max completion tokens")
    ap.add_argument("--backend", default="peft")
    args = ap.parse_args()

    import torch

    from promedical.core.data import load_split
    from promedical.policy.config import GRPOSettings
    from promedical.policy.reward import RubricReward
    from promedical.policy.training import train_policy
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    try:  # bad values answered in one line, before anything loads
        settings = GRPOSettings(model=args.model, backend=args.backend, steps=args.steps, group_size=args.group_size,
                                max_completion_length=args.length, lr=2e-5, save_steps=10_000)
        rm = CriteriaRewardModel.load(RMConfig(model=args.model)).freeze()  # as load_reward_model does
    except (ValueError, OSError) as exc:
        ap.error(str(exc).splitlines()[0])
    scored, read = [], []  # the items of every reward call; the tokens each forward of the reward model ran

    def scorer(items):
        scored.extend(items)
        return rm.score_batch(items)

    hook = rm.model.get_input_embeddings().register_forward_hook(lambda m, a, out: read.append(a[0].numel()))
    rubrics = load_split("train")[:8]
    reward = RubricReward(scorer, {r.id: r for r in rubrics}, settings.reward_config(), settings.mode)
    with tempfile.TemporaryDirectory() as tmp:
        s = train_policy(settings, rubrics, reward, Path(tmp), resume=False)
    hook.remove()
    encoded = [rm.encode(*item) for item in scored]
    flat = sum(len(p) + sum(map(len, ss)) for p, ss, _ in encoded)  # one packed row per rollout, nothing shared
    split = s["split_seconds"]
    total = sum(split.values())
    device = "cuda" if torch.cuda.is_available() else f"cpu threads={torch.get_num_threads()}"
    print(f"device={device} model={args.model} backend={args.backend} steps={args.steps} "
          f"group={args.group_size} max_completion={args.length}")
    print("seconds/step: " + " | ".join(f"{k} {v / args.steps:.2f}" for k, v in split.items())
          + f" | total {total / args.steps:.2f}")
    print(f"reward-model tokens per rollout: {sum(read) / len(scored):.0f} read "
          f"({flat / len(scored):.0f} in one row per rollout without sharing; "
          f"{sum(len(x) for _, ss, _ in encoded for x in ss) / len(scored):.0f} of them criterion suffixes)")
    share = split["reward"] / total
    print(f"reward share of the step: {share:.1%} (target <= 20%: {'met' if share <= 0.20 else 'NOT met'})")
    print(json.dumps({"split_seconds": split, "reward_share": round(share, 4),
                      "rm_tokens_per_rollout": round(sum(read) / len(scored), 1)}))


if __name__ == "__main__":
    main()
