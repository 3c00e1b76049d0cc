"""Stage 04: GRPO on the policy, rewarded by the frozen reward model through the hierarchical formula,
with the reward-hacking monitor (notebook 04)."""
