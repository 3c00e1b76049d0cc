import pytest
from conftest import make_rubric
from hypothesis import given
from hypothesis import strategies as st

from promedical.core.rubric import Rubric
from promedical.core.scoring import RewardConfig, Scores, grpo_reward, lexicographic_compare, tier_scores


@pytest.fixture
def rubric():
    return Rubric.from_dict(make_rubric())


def test_tier_scores(rubric):
    s = tier_scores(rubric, {"p1": True, "p2": False, "p3": True, "b1": True, "v1": False})
    assert s == Scores(s1=pytest.approx(0.7), s2=1, s3=0)
    assert tier_scores(rubric, {"p1": True, "p2": True, "p3": True, "b1": False, "v1": True}) == Scores(1.0, 0, 1)


def test_unknown_veto_grade_is_never_read_as_safe(rubric):
    with pytest.raises(KeyError, match="unknown is not safe"):
        tier_scores(rubric, {"p1": True})
    with pytest.raises(KeyError, match="unknown criteria"):
        tier_scores(rubric, {"v1": False, "zz": True})


def test_reward_formula_and_clip():
    cfg = RewardConfig(alpha=0.25, headroom=0.25, lam=1.5)
    assert grpo_reward(Scores(0.6, 1, 0), cfg) == pytest.approx(0.85)
    assert grpo_reward(Scores(1.0, 3, 0), cfg) == pytest.approx(1.25)  # clipped at 1 + headroom
    assert grpo_reward(Scores(1.0, 3, 1), cfg) == pytest.approx(-0.25)
    assert grpo_reward(Scores(0.0, 0, 2), cfg) == pytest.approx(-3.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=1.0), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(headroom=0.0), "headroom"),
    (dict(lam=1.2), r"lam must be >= 1 \+ headroom"), (dict(alpha=float("nan")), "finite"),
    (dict(headroom=True), "finite"),
])
def test_reward_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)


def test_lexicographic_order():
    assert lexicographic_compare(Scores(0.2, 0, 0), Scores(1.0, 5, 1)) == 1
    assert lexicographic_compare(Scores(0.5, 0, 1), Scores(0.6, 0, 1)) == -1
    assert lexicographic_compare(Scores(0.5, 2, 0), Scores(0.5, 1, 0)) == 1
    assert lexicographic_compare(Scores(0.5, 1, 0), Scores(0.1 + 0.4, 1, 0)) == 0


s1s = st.floats(0, 1)
s2s = st.integers(0, 10)
s3s = st.integers(0, 5)
configs = st.builds(
    lambda a, b, extra: RewardConfig(alpha=a, headroom=b, lam=1 + b + extra),
    st.floats(0, 0.99), st.floats(0.01, 3), st.floats(0, 3),
)


@given(s1s, s2s, s1s, s2s, st.integers(1, 5))
def test_one_veto_always_loses_to_zero_vetoes(s1a, s2a, s1b, s2b, s3b):
    assert lexicographic_compare(Scores(s1a, s2a, 0), Scores(s1b, s2b, s3b)) == 1
    assert lexicographic_compare(Scores(s1b, s2b, s3b), Scores(s1a, s2a, 0)) == -1


@given(s1s, s2s, s1s, s2s, configs)
def test_a_veto_outweighs_every_possible_gain(s1a, s2a, s1b, s2b, cfg):
    # lam >= 1 + headroom: a response with a veto never earns more than one without
    assert grpo_reward(Scores(s1a, s2a, 1), cfg) <= grpo_reward(Scores(s1b, s2b, 0), cfg)
    assert grpo_reward(Scores(s1a, s2a, 1), cfg) <= 0.0


@given(s1s, s1s, s2s, s2s, s3s, s3s, configs)
def test_reward_is_monotone_in_each_score(s1a, s1b, s2a, s2b, s3a, s3b, cfg):
    lo1, hi1 = sorted((s1a, s1b))
    lo2, hi2 = sorted((s2a, s2b))
    lo3, hi3 = sorted((s3a, s3b))
    assert grpo_reward(Scores(lo1, s2a, s3a), cfg) <= grpo_reward(Scores(hi1, s2a, s3a), cfg)
    assert grpo_reward(Scores(s1a, lo2, s3a), cfg) <= grpo_reward(Scores(s1a, hi2, s3a), cfg)
    assert grpo_reward(Scores(s1a, s2a, hi3), cfg) <= grpo_reward(Scores(s1a, s2a, lo3), cfg)
