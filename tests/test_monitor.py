"""Reward-hacking monitor: probe selection, the RM-vs-independent gap, and the callback on a real tiny policy."""
import math

import pytest
from conftest import make_rubric

from promedical.core.data import load_split
from promedical.core.rubric import Rubric
from promedical.policy.monitor import PREFIX, grade_probe_answers, hacking_monitor, probe_rubrics
from promedical.policy.reward import RubricReward

RUBRIC = Rubric.from_dict(make_rubric())


def sig(x):
    return 1 / (1 + math.exp(-x))


class BlindScorer:
    """A reward model that never sees a violation: every criterion, veto included, on the good side (r = 3)."""

    def __call__(self, items):
        return [[3.0 for _ in criteria] for _, _, criteria in items]


def test_probe_rubrics_are_the_most_checkable():
    train = load_split("train")
    picked = probe_rubrics(train, 2)
    counts = sorted((sum(c.check is not None for c in r.criteria) for r in train), reverse=True)
    assert [sum(c.check is not None for c in r.criteria) for r in picked] == counts[:2]
    assert probe_rubrics(train, 2) == picked  # fixed


def test_gap_shows_a_reward_model_blind_to_a_violation():
    reward = RubricReward(BlindScorer(), {"r1": RUBRIC})
    row = grade_probe_answers(reward, [RUBRIC, RUBRIC], ["As a doctor, I say rest.", "Rest and see a clinician."])
    # only v1 has a machine check: the independent grader sees one violation in two answers
    assert row[f"{PREFIX}coverage"] == pytest.approx(2 / 10)
    assert row[f"{PREFIX}independent_score"] == pytest.approx(0.5) and row[f"{PREFIX}independent_veto_rate"] == 0.5
    assert row[f"{PREFIX}rm_score"] == pytest.approx(sig(3)) and row[f"{PREFIX}rm_veto_rate"] == 0.0
    assert row[f"{PREFIX}gap"] == pytest.approx(sig(3) - 0.5)
    expected_reward = min(sig(3) + 0.25 * sig(3), 1.25) - 1.5 * sig(-3)
    assert row[f"{PREFIX}train_reward"] == pytest.approx(expected_reward)
    scalar = grade_probe_answers(RubricReward(BlindScorer(), {"r1": RUBRIC}, mode="scalar"), [RUBRIC], ["x"])
    assert scalar[f"{PREFIX}train_reward"] == pytest.approx(sig(3))
    with pytest.raises(ValueError, match="every"):
        hacking_monitor(reward, [RUBRIC], every=0)


@pytest.mark.model
def test_callback_answers_with_the_policy_and_leaves_training_state_alone(tmp_path):
    import torch
    from transformers import TrainerControl, TrainerState

    from promedical.models.loading import load_model

    model, tokenizer = load_model("tiny-qwen3")
    model.train()
    reward = RubricReward(BlindScorer(), {"r1": RUBRIC})
    cb = hacking_monitor(reward, [RUBRIC], every=2, max_new_tokens=4, html_path=tmp_path / "m.html")
    state = TrainerState()
    for step in (1, 2):
        state.global_step = step
        torch.manual_seed(7)
        cb.on_step_end(None, state, TrainerControl(), model=model, processing_class=tokenizer)
        after = torch.rand(3)
        torch.manual_seed(7)
        assert torch.equal(after, torch.rand(3))  # the monitor's generation did not consume the RNG
    assert [r["step"] for r in state.log_history] == [2] and len(cb.rows) == 1
    assert model.training and len(state.log_history[0][f"{PREFIX}answers"]) == 1
    assert "Reward-hacking monitor" in (tmp_path / "m.html").read_text()
