"""The reward model's training data as groups: each prompt with its labelled responses, every criterion's
good side, disagreement weights and the class-balanced BCE label weights."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

from promedical.core.scoring import is_good
from promedical.reward.config import BCE_BALANCES
from promedical.reward.scorer import Query


# ----------------------------------------------------------------------------------------------
# Training data: prompts -> responses -> every labelled criterion
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainingResponse:
    messages: list[dict]
    response: str
    criteria: list[Query]
    good: list[bool | float | None]  # per criterion: on the good side (True), not (False), unknown (None);
    # the ablation (``overall_groups``): one overall label, a share in [0, 1]
    encoded: tuple = ()
    weights: list[float] | None = None  # per criterion: the BCE weight of its label (None: all 1)

    def label_weight(self, i: int) -> float:
        return 1.0 if self.weights is None else self.weights[i]

    @property
    def overall_label(self) -> float | None:
        """The ablation's pointwise label: the label-weighted share of the known criteria on whose good side
        the response is (None: no known label). One score fit to every criterion's label under the BCE is
        fit best by exactly this share, so the ablation's sigma(r) estimates what the criterion model's
        does on average, and calibration compares like with like."""
        known = [(self.label_weight(i), good) for i, good in enumerate(self.good) if good is not None]
        total = sum(w for w, _ in known)
        return sum(w for w, good in known if good) / total if total else None


@dataclass
class TrainingGroup:
    """One prompt's labelled responses. ``pairs``: (response a, criterion index in a, response b,
    criterion index in b, weight) with a on the good side; ``contrasts``: (response, good criterion,
    bad criterion) within one response."""

    responses: list[TrainingResponse]
    pairs: list[tuple[int, int, int, int, float]]
    contrasts: list[tuple[int, int, int]]
    overall_pairs: list[tuple[int, int]] = field(default_factory=list)  # (winner, loser) of each lexicographic pair

    def known_labels(self):
        """(response, criterion index, tier, good side) of every known label."""
        for r in self.responses:
            for i, ((tier, _), good) in enumerate(zip(r.criteria, r.good)):
                if good is not None:
                    yield r, i, tier, good

    @property
    def n_labels(self) -> int:
        return sum(1 for _ in self.known_labels())

    @property
    def label_weight(self) -> float:
        """The summed BCE weight of the known labels (= ``n_labels`` without balancing)."""
        return sum(r.label_weight(i) for r, i, _, _ in self.known_labels())


def training_groups(pairs: Sequence[dict], pointwise: Sequence[dict], disagree_weight: float = 1.0, *,
                    balance: str = "none", veto_weight: float = 1.0) -> list[TrainingGroup]:
    """Group criterion-expanded pairs and pointwise rows (``pairs.build_datasets``) by prompt and response.
    ``balance``: the BCE label weights (``label_weights``); ``veto_weight`` multiplies the weight of every
    safety-veto label and veto pair instance (the veto tier's share of the loss).

    A pointwise row's ``label`` is "criterion met" (for a veto: violated), turned into the good side by
    ``scoring.is_good``; a pair's chosen response is on the good side of its criterion. Rows without
    prompt/response ids are keyed by their text."""
    prompts: dict[str, dict] = {}

    def response(row: dict, rid_key: str | None, text_key: str) -> tuple[dict, dict]:
        pkey = row.get("prompt_id") or json.dumps(row["messages"], sort_keys=True)
        g = prompts.setdefault(pkey, {"messages": row["messages"], "responses": {}, "pairs": [],
                                             "overall": {}})
        rkey = row.get(rid_key) if rid_key else None
        rkey = rkey or row[text_key]
        return g, g["responses"].setdefault(rkey, {"response": row[text_key], "labels": {}})

    def label(resp: dict, row: dict, good: bool) -> tuple[str, str]:
        key = (row.get("tier") or "proficiency", row["criterion"])
        if resp["labels"].setdefault(key, good) != good:
            raise ValueError(f"contradictory labels for one response on criterion {row['criterion'][:60]!r}")
        return key

    for row in pointwise:
        _, resp = response(row, "response_id", "response")
        label(resp, row, is_good(row.get("tier") or "proficiency", row["label"]))
    for row in pairs:
        g, chosen = response(row, "chosen_id", "chosen")
        _, rejected = response(row, "rejected_id", "rejected")
        key = label(chosen, row, True)
        label(rejected, row, False)
        agrees = row.get("agrees_with_pair", True)
        weight = (1.0 if agrees else float(disagree_weight)) * (veto_weight if key[0] == "veto" else 1.0)
        g["pairs"].append((id(chosen), id(rejected), key, weight))
        g["overall"].setdefault((id(chosen), id(rejected)) if agrees else (id(rejected), id(chosen)))
    groups = []
    for g in prompts.values():
        resps, index = [], {}
        for resp in g["responses"].values():
            index[id(resp)] = len(resps)
            crits = list(resp["labels"])
            resps.append(TrainingResponse(g["messages"], resp["response"], crits, [resp["labels"][c] for c in crits]))
        pair_idx = [(index[a], resps[index[a]].criteria.index(key), index[b], resps[index[b]].criteria.index(key), w)
                    for a, b, key, w in g["pairs"]]
        contrasts = [(i, ci, cj) for i, r in enumerate(resps) for ci, gi in enumerate(r.good) if gi
                     for cj, gj in enumerate(r.good) if gj is False]
        groups.append(TrainingGroup(resps, pair_idx, contrasts, [(index[a], index[b]) for a, b in g["overall"]]))
    if balance != "none" or veto_weight != 1.0:
        weights = label_weights(groups, balance)
        for g in groups:
            for r in g.responses:
                r.weights = [weights.get((t, good), 1.0) * (veto_weight if t == "veto" else 1.0)
                             for (t, _), good in zip(r.criteria, r.good)]
    return groups


def overall_groups(groups: Sequence[TrainingGroup]) -> list[TrainingGroup]:
    """The ablation's training data (``RMConfig.criteria="none"``) from the same groups: each response one
    label, its ``overall_label`` (weighing the sum of its criteria's BCE weights), and each lexicographic
    pair once, winner over loser, weight 1 (Bradley-Terry on the overall pairs); no within-response
    contrasts (one score per response has none). The scorer reads one overall question per response."""
    out = []
    for g in groups:
        responses = []
        for r in g.responses:
            label = r.overall_label
            weight = sum(r.label_weight(i) for i, good in enumerate(r.good) if good is not None)
            responses.append(TrainingResponse(r.messages, r.response, [("proficiency", "")], [label], weights=[weight]))
        out.append(TrainingGroup(responses, [(a, 0, b, 0, 1.0) for a, b in g.overall_pairs], [], list(g.overall_pairs)))
    return out


def label_weights(groups: Sequence[TrainingGroup], balance: str = "tier") -> dict[tuple[str, bool], float]:
    """{(tier, good side): BCE weight} from the training labels of every group.

    ``"tier"``: within each tier, a label on side s weighs n_tier / (2 n_tier,s), so both sides carry
    half of the tier's weight and the tier's total stays n_tier (tiers keep their share of the loss);
    a tier with labels on one side only keeps weight 1. ``"none"``: every label weighs 1."""
    if balance not in BCE_BALANCES:
        raise ValueError(f"bce_balance must be one of {BCE_BALANCES}, got {balance!r}")
    counts: dict[tuple[str, bool], int] = {}
    for g in groups:
        for _, _, tier, good in g.known_labels():
            counts[(tier, good)] = counts.get((tier, good), 0) + 1
    if balance == "none":
        return {key: 1.0 for key in counts}
    out = {}
    for (tier, good), n in counts.items():
        other = counts.get((tier, not good), 0)
        out[(tier, good)] = (n + other) / (2 * n) if other else 1.0
    return out


def label_weight_table(groups: Sequence[TrainingGroup]) -> dict[str, dict]:
    """Per tier: the labels on each side and their BCE weight, as the groups carry them (the train log)."""
    table: dict[str, dict] = {}
    for g in groups:
        for r, i, tier, good in g.known_labels():
            side = table.setdefault(tier, {}).setdefault("good" if good else "bad", {"labels": 0, "weight": r.label_weight(i)})
            side["labels"] += 1
    return table
