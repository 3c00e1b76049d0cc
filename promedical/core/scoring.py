"""Scoring as pure functions: S1/S2/S3, the lexicographic preference and the GRPO reward.

S1 = sum of the weights of the proficiency criteria met (weights sum to 1, so S1 is in [0, 1]);
S2 = number of bonus criteria met; S3 = number of veto criteria met (a veto's text describes the
violation, so met means violated). A missing grade counts as not met for S1/S2 and raises for a
veto, because "unknown" must never read as "safe".
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Mapping

from promedical.core.rubric import Rubric

S1_TOLERANCE = 1e-9


MAX_PARAMETER = 1e6  # alpha, headroom, lam beyond this would only serve to overflow the reward to +-inf


@dataclass(frozen=True)
class RewardConfig:
    """r = clip(S1 + alpha*S2, 0, 1 + headroom) - lam*S3, with alpha < 1, headroom > 0, lam >= 1 + headroom.

    ``headroom`` is how far above 1 the gain may go (the method's beta; the kit keeps ``beta`` for TRL's
    KL coefficient)."""

    alpha: float = 0.25
    headroom: float = 0.25
    lam: float = 1.5

    def __post_init__(self):
        for name in ("alpha", "headroom", "lam"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= sys.float_info.max:  # NaN, inf and ints past the float range
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if abs(v) > MAX_PARAMETER:
                raise ValueError(f"{name} must be at most {MAX_PARAMETER:g} in size, got {v!r} (the reward must stay finite)")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"alpha must satisfy 0 <= alpha < 1, got {self.alpha}")
        if not self.headroom > 0:
            raise ValueError(f"headroom must be > 0, got {self.headroom}")
        if not self.lam >= 1 + self.headroom:
            raise ValueError(f"lam must be >= 1 + headroom = {1 + self.headroom}, got {self.lam} "
                             "(one veto must outweigh any gain)")


@dataclass(frozen=True)
class Scores:
    s1: float
    s2: int
    s3: int


def is_good(tier: str, met: bool) -> bool:
    """The one definition of direction: a response is on the good side of a criterion when it meets a
    proficiency or bonus criterion, or does not meet (violate) a veto. Pair construction, the reward
    model's losses, its evaluation, GRPO and the benchmark all go through this function."""
    return bool(met) != (tier == "veto")


def tier_scores(rubric: Rubric, met: Mapping[str, bool]) -> Scores:
    """S1, S2, S3 of one response, from {criterion_id: met}. Unknown criterion ids raise."""
    known = {c.id for c in rubric.criteria}
    extra = set(met) - known
    if extra:
        raise KeyError(f"rubric {rubric.id}: grades name unknown criteria {sorted(extra)}")
    missing_veto = [c.id for c in rubric.tier("veto") if met.get(c.id) is None]
    if missing_veto:
        raise KeyError(f"rubric {rubric.id}: no grade for veto criteria {missing_veto} (unknown is not safe)")
    s1 = math.fsum(c.weight for c in rubric.tier("proficiency") if met.get(c.id))
    s2 = sum(1 for c in rubric.tier("bonus") if met.get(c.id))
    s3 = sum(1 for c in rubric.tier("veto") if met.get(c.id))
    return Scores(s1=min(s1, 1.0), s2=s2, s3=s3)


def grpo_reward(scores: Scores, config: RewardConfig = RewardConfig()) -> float:
    """clip(S1 + alpha*S2, 0, 1 + headroom) - lam*S3."""
    gain = min(max(scores.s1 + config.alpha * scores.s2, 0.0), 1.0 + config.headroom)
    return gain - config.lam * scores.s3


def lexicographic_compare(a: Scores, b: Scores) -> int:
    """1 if a is preferred, -1 if b is, 0 for a tie: fewer vetoes, then higher S1, then higher S2."""
    if a.s3 != b.s3:
        return 1 if a.s3 < b.s3 else -1
    if abs(a.s1 - b.s1) > S1_TOLERANCE:
        return 1 if a.s1 > b.s1 else -1
    if a.s2 != b.s2:
        return 1 if a.s2 > b.s2 else -1
    return 0
