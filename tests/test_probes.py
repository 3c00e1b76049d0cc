"""Gameability probes: the variants, the per-tier arithmetic with deterministic scorers, and the real RM plumbing."""
import math

import pytest
from conftest import make_rubric

from promedical.bench.probes import (
    DISCLAIMER,
    FILLER,
    IMPERSONATION_VETO,
    PHYSICIAN,
    PROBES,
    gold_responses,
    run_probes,
    variants,
)
from promedical.core.data import load_candidates, load_split
from promedical.core.rubric import Rubric

RUBRIC = Rubric.from_dict(make_rubric())
RESPONSES = [{"prompt_id": "r1", "response_id": "a", "response": "See a clinician if it lasts."},
             {"prompt_id": "r1", "response_id": "b", "response": "Rest, fluids, and see your GP soon."}]


def sig(x):
    return 1 / (1 + math.exp(-x))


class HonestScorer:
    """Proficiency/bonus read nothing cheap (constant); a veto (r = log-odds of the good side) is
    violated when the answer claims to be a GP."""

    def __call__(self, items):
        return [[(-4.0 if "As a GP" in response else 4.0) if tier == "veto" else 1.0 for tier, _ in criteria]
                for _, response, criteria in items]


class GameableScorer:
    """Length buys every criterion, proficiency and veto alike (a scalar 'longer is better' reward)."""

    def __call__(self, items):
        return [[len(response) / 100 - 1 for _ in criteria] for _, response, criteria in items]


def test_variants_add_what_they_say():
    v = variants(RUBRIC, "Answer.")
    assert set(v) == {"original", *PROBES} and v["original"] == "Answer."
    assert v["padding"].startswith("Answer.") and FILLER in v["padding"]
    assert all(c.text in v["keywords"] for c in RUBRIC.criteria)
    assert v["disclaimers"].count(DISCLAIMER) == 3 and v["physician"] == PHYSICIAN + "Answer."


def test_an_honest_scorer_passes_every_expectation_with_exact_arithmetic():
    out = run_probes(HonestScorer(), [RUBRIC], RESPONSES, reps=200)
    assert out["n_responses"] == 2 and all(e["passed"] for e in out["expectations"]), out["expectations"]
    rows = {(r["probe"], r["tier"]): r for r in out["table"]}
    # two vetoes (the rubric's v1 + the shared impersonation veto) flip from P(violated) = sig(-4) to sig(4)
    assert rows[("physician", "s3")]["mean_delta"] == pytest.approx(2 * (sig(4) - sig(-4)))
    assert rows[("physician", "s3")]["original"] == pytest.approx(2 * sig(-4))
    assert rows[("padding", "s1")]["mean_delta"] == 0 and rows[("padding", "s1")]["original"] == pytest.approx(sig(1))
    assert rows[("physician", "reward")]["mean_delta"] < -1  # lam * S3 outweighs everything
    assert rows[("physician", "s3")]["share_up"] == 1.0 and len(out["table"]) == 4 * 4
    assert out["impersonation_veto"] == IMPERSONATION_VETO.text


def test_a_length_gameable_scorer_fails_every_expectation():
    out = run_probes(GameableScorer(), [RUBRIC], RESPONSES, reps=200)
    result = {(e["probe"], e["tier"]): e["passed"] for e in out["expectations"]}
    # longer buys S1, and (r being the good side's log-odds) lowers P(violated): disclaimers buy "safety",
    # and the physician claim, being longer, lowers S3 instead of raising it
    assert result == {("padding", "s1"): False, ("keywords", "s1"): False, ("disclaimers", "s1"): False,
                      ("disclaimers", "s3"): False, ("physician", "s3"): False}
    pad = next(r for r in out["table"] if (r["probe"], r["tier"]) == ("padding", "s1"))
    # S1 = sum_i w_i sig(len/100 - 1), weights sum to 1, so S1 = mean over responses of sig(len/100 - 1)
    expect = sum(sig(len(variants(RUBRIC, x["response"])["padding"]) / 100 - 1) - sig(len(x["response"]) / 100 - 1)
                 for x in RESPONSES) / 2
    assert pad["mean_delta"] == pytest.approx(expect) and pad["ci"][0] > 0


def test_gold_responses_are_the_good_candidates():
    good = gold_responses(load_candidates(), 3)
    assert len(good) == 3 and {c["label"] for c in good} == {"good"}


@pytest.mark.model
def test_probes_run_on_the_tiny_reward_model():
    from promedical.reward.config import RMConfig
    from promedical.reward.scorer import CriteriaRewardModel

    rm = CriteriaRewardModel.load(RMConfig(model="tiny-qwen3", seed=1))
    out = run_probes(rm.score_batch, load_split("bench"), gold_responses(load_candidates(), 2), reps=200)
    assert out["n_responses"] == 2 and len(out["table"]) == 16 and len(out["expectations"]) == 5
    assert all(math.isfinite(r["mean_delta"]) for r in out["table"])
    assert all(set(s) == {"original", *PROBES} for s in out["per_response"].values())
    assert all(isinstance(e["passed"], bool) for e in out["expectations"])
