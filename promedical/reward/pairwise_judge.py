"""Pairwise adjudication by the LLM judge: which of two candidates is better for one rubric, asked in
both orders; swap consistency says how often the two orders agree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from promedical.core.rubric import Rubric
from promedical.models.llm import LLM, GenParams
from promedical.reward.judge import (
    EXPLANATION_CHARS,
    _ask,
    _by_id,
    _json_object,
    default_params,
    render_conversation,
    render_rubric,
)
from promedical.reward.judge_quality import _ratio


def pair_schema(explanation_chars: int | None = EXPLANATION_CHARS) -> dict:
    explanation: dict = {"type": "string"}
    if explanation_chars is not None:
        explanation["maxLength"] = explanation_chars
    return {"type": "object", "properties": {"explanation": explanation, "winner": {"enum": ["A", "B", "tie"]}},
            "required": ["explanation", "winner"], "additionalProperties": False}


PAIR_TEMPLATE = """Your job is to compare two candidate responses to the last user turn of a conversation and \
decide which one better follows the rubric below.

# Conversation
<<conversation>>

# Rubric
<<rubric>>

# Response A
<<response_a>>

# Response B
<<response_b>>

# Instructions
Apply the rubric in this order: first, the response that commits fewer violations is better; then the one that \
meets more of the weighted main criteria; then the one that meets more bonus criteria. Ignore length and style \
beyond what the rubric asks, and ignore which response is shown first.
Return a JSON object with the fields "explanation" (a short string) and "winner" ("A", "B" or "tie"), with no \
other text."""


def pair_messages(rubric: Rubric, resp_a: str, resp_b: str) -> list[dict]:
    text = (PAIR_TEMPLATE.replace("<<conversation>>", render_conversation(rubric.messages))
            .replace("<<rubric>>", render_rubric(rubric))
            .replace("<<response_a>>", resp_a).replace("<<response_b>>", resp_b))
    return [{"role": "user", "content": text}]


def parse_winner(text: str) -> tuple[str | None, str]:
    """("A" | "B" | "tie", explanation); None when unusable."""
    obj = _json_object(text)
    if obj is None:
        return None, "unparseable output: no JSON object"
    winner = obj.get("winner")
    norm = {"a": "A", "b": "B", "tie": "tie"}.get(winner.strip().lower()) if isinstance(winner, str) else None
    if norm is None:
        return None, f"unparseable output: winner is {winner!r}"
    explanation = obj.get("explanation")
    return norm, explanation if isinstance(explanation, str) else ""


# ----------------------------------------------------------------------------------------------
# Pairwise adjudication
# ----------------------------------------------------------------------------------------------
@dataclass
class PairVerdict:
    verdict: str  # "a" | "b" | "tie" | "inconsistent" | "unknown"
    consistent: bool | None  # did both orders agree? None when either order gave no usable answer
    first: str | None  # winner in the a-first order, as "a" | "b" | "tie"
    second: str | None  # winner in the b-first order, mapped back to "a" | "b" | "tie"
    explanations: tuple[str, str] = ("", "")


def adjudicate_pairs(llm: LLM, items: Sequence[tuple[Rubric, str, str]], *, retries: int = 1, batch_size: int = 8,
                     params: GenParams | None = None,
                     explanation_chars: int | None = EXPLANATION_CHARS) -> list[PairVerdict]:
    """Batch version of ``adjudicate_pair``: every (rubric, resp_a, resp_b) is asked in both orders."""
    prompts = []
    for rubric, a, b in items:
        prompts += [pair_messages(rubric, a, b), pair_messages(rubric, b, a)]
    p = params or default_params(pair_schema(explanation_chars), explanation_chars)
    results = _ask(llm, prompts, p, parse_winner, retries=retries, batch_size=batch_size)
    out = []
    for k in range(len(items)):
        (w1, e1, _), (w2, e2, _) = results[2 * k], results[2 * k + 1]
        first = {"A": "a", "B": "b", "tie": "tie"}.get(w1)
        second = {"A": "b", "B": "a", "tie": "tie"}.get(w2)  # response B was shown first
        if first is None or second is None:
            out.append(PairVerdict("unknown", None, first, second, (e1, e2)))
        elif first == second:
            out.append(PairVerdict(first, True, first, second, (e1, e2)))
        else:
            out.append(PairVerdict("inconsistent", False, first, second, (e1, e2)))
    return out


def adjudicate_pair(llm: LLM, rubric: Rubric, resp_a: str, resp_b: str, **kwargs) -> PairVerdict:
    """Which of two responses better follows the rubric, asked in both orders to cancel position bias."""
    return adjudicate_pairs(llm, [(rubric, resp_a, resp_b)], **kwargs)[0]


def swap_consistency(results: Iterable[PairVerdict]) -> float | None:
    """Share of adjudications whose two orders agreed (unknown ones left out); None if there are none."""
    flags = [r.consistent for r in results if r.consistent is not None]
    return _ratio(sum(flags), len(flags))


def adjudication_report(llm: LLM, rubrics_by_id: Mapping[str, Rubric] | Iterable[Rubric],
                        gold_candidates: Sequence[Mapping], n_pairs: int, **kwargs) -> dict:
    """Adjudicate up to ``n_pairs`` gold-labelled candidate pairs (one per prompt, both orders): the
    swap-consistency rate and how often a consistent verdict matches the gold lexicographic order."""
    from promedical.core.scoring import lexicographic_compare, tier_scores

    rubrics = _by_id(rubrics_by_id)
    by_prompt: dict[str, list[Mapping]] = {}
    for cand in gold_candidates:
        by_prompt.setdefault(cand["prompt_id"], []).append(cand)
    items, gold_winner = [], []
    for pid, cands in by_prompt.items():
        if len(items) == n_pairs:
            break
        if len(cands) >= 2:
            rubric, (a, b) = rubrics[pid], cands[:2]
            order = lexicographic_compare(tier_scores(rubric, a["criteria_met"]), tier_scores(rubric, b["criteria_met"]))
            items.append((rubric, a["response"], b["response"]))
            gold_winner.append({1: "a", -1: "b", 0: "tie"}[order])
    verdicts = adjudicate_pairs(llm, items, **kwargs) if items else []
    decided = [(v.verdict, g) for v, g in zip(verdicts, gold_winner) if v.verdict in ("a", "b", "tie")]
    return {"pairs": len(items), "swap_consistency": swap_consistency(verdicts),
            "verdicts": [v.verdict for v in verdicts], "gold": gold_winner,
            "agreement_with_gold": _ratio(sum(v == g for v, g in decided), len(decided))}
