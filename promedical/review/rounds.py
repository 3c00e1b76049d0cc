"""Review rounds: a batch drafted with the current few-shot pool, reviewed, approved rubrics joining the pool.

:func:`round_pool` is the pool a new round drafts with — the training rubrics plus every approved
rubric of the store (stage 01's ``rubrics.step.few_shot_pool`` adds the workspace's references).
:func:`draft_round` drafts a batch with an LLM and that pool and opens the round; :func:`open_round`
opens one over drafts made elsewhere.
Either way the round records its rubric ids and the ids of the pool it was drafted with.

:func:`round_metrics` per round: **pass rate** (share of the round's resolved rubrics approved with
no edit to the draft — the paper's headline), approval rate, **edit rate per tier** (share of draft
criteria of a tier that the final revision changed or removed), the **most-changed dimensions**,
and the round's agreement (:mod:`promedical.review.reviewer_agreement`). :func:`rounds_figure` draws them across
rounds with plotly.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from promedical.core.rubric import TIERS, Rubric
from promedical.review.reviewer_agreement import round_agreement
from promedical.review.team import TeamStore
from promedical.rubrics.generate import FewShotPool
from promedical.rubrics.store import RubricStore, diff_rubrics

RESOLVED = ("approved", "rejected")


def round_pool(store: RubricStore, base: list[Rubric] | None = None) -> FewShotPool:
    """Few-shot pool for the next round: approved rubrics + ``base`` (default: the training split).

    An approved rubric replaces a base rubric of the same id (drafts of training instructions keep
    the instruction's id), so the reviewed version is the example the next round sees.
    """
    from promedical.core.data import load_split

    pool = FewShotPool(store.rubrics(status="approved"))  # first: a reviewed rubric wins over a base one of its id
    pool.add(load_split("train") if base is None else base)
    return pool


def open_round(store: RubricStore, team: TeamStore, drafts: list[Rubric], pool: FewShotPool, *,
               author: str = "generator", note: str = "") -> int:
    """Import ``drafts`` (as draft revisions) and record a new round over them; returns its number."""
    ids = list(dict.fromkeys(r.id for r in drafts))
    store.import_rubrics(drafts, author=author, reason=f"LLM draft ({note})" if note else "LLM draft")
    current = store.statuses(ids)
    busy = [rid for rid in ids if current.get(rid) != "draft"]
    if busy:
        raise ValueError(f"rubrics already reviewed cannot join a new round as drafts: {', '.join(busy[:5])}")
    return team.add_round(ids, [r.id for r in pool.rubrics], note)


def draft_round(store: RubricStore, team: TeamStore, items: list[Rubric], llm, out_path: str | Path, *,
                k: int = 1, base_pool: list[Rubric] | None = None, progress: bool = False, **gen) -> int:
    """Draft one rubric per item with ``llm`` and the current pool, then open the round."""
    from promedical.rubrics.generate import generate_rubrics, load_generated

    pool = round_pool(store, base_pool)
    generate_rubrics(items, llm, out_path, pool=pool, k=k, progress=progress, **gen)
    wanted = {it.id for it in items}
    drafts = [r for r in load_generated(out_path) if r.id in wanted]
    return open_round(store, team, drafts, pool, author=f"generator:{getattr(llm, 'name', 'llm')}")


def round_metrics(store: RubricStore, team: TeamStore, round: int | None = None) -> dict:
    rnd = team.round(round)
    ids = rnd["rubric_ids"]
    latest = store.current(ids)
    drafts, resolved = {}, {}
    for rid in ids:
        assigned = team.assignments(rnd["round"], rubric_id=rid)
        base = assigned[0].base_revision if assigned else 1
        drafts[rid] = store.get(rid, base)
        if rid in latest and latest[rid].revision > base and latest[rid].status in RESOLVED:
            resolved[rid] = latest[rid]
    passed = approved = 0
    tier_total, tier_changed, dims = Counter(), Counter(), Counter()
    for rid, rev in resolved.items():
        draft = drafts[rid].rubric
        changes = diff_rubrics(draft, rev.rubric)
        approved += rev.status == "approved"
        passed += rev.status == "approved" and not changes
        for c in draft.criteria:
            tier_total[c.tier] += 1
        touched = {ch["criterion"] for ch in changes if ch["criterion"]}
        by_id = {c.id: c for c in draft.criteria}
        for cid in touched:
            if cid in by_id:
                tier_changed[by_id[cid].tier] += 1
                dims[by_id[cid].dimension or "(none)"] += 1
            else:  # added by the review
                new = next((c for c in rev.rubric.criteria if c.id == cid), None)
                dims[(new.dimension if new else None) or "(none)"] += 1
    agreement = round_agreement(team, rnd["round"])
    n = len(resolved)
    return {"round": rnd["round"], "rubrics": len(ids), "resolved": n, "approved": approved,
            "pool_size": len(rnd["pool_ids"]),
            "pass_rate": passed / n if n else None, "approval_rate": approved / n if n else None,
            "edit_rate_per_tier": {t: tier_changed[t] / tier_total[t] for t in TIERS if tier_total[t]},
            "most_changed_dimensions": dims.most_common(5),
            "decision_kappa": agreement["rubric_decision"]["kappa"],
            "criterion_kappa": agreement["criterion_decision"]["kappa"],
            "criterion_alpha": agreement["criterion_decision"]["alpha"],
            "agreement": agreement}


def rounds_table(store: RubricStore, team: TeamStore) -> list[dict]:
    return [round_metrics(store, team, r["round"]) for r in team.rounds()]


def rounds_figure(table: list[dict]):
    """Plotly figure: pass rate, approval rate and agreement per round; edit rate per tier per round."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [f"round {m['round']}" for m in table]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("pass rate and agreement", "edit rate per tier"))
    for key, name in (("pass_rate", "pass rate (approved without edits)"), ("approval_rate", "approval rate"),
                      ("criterion_kappa", "criterion κ (2 raters)"), ("criterion_alpha", "criterion α (all raters)"),
                      ("decision_kappa", "rubric decision κ")):
        fig.add_trace(go.Scatter(x=x, y=[m[key] for m in table], name=name, mode="lines+markers"), row=1, col=1)
    for tier in TIERS:
        fig.add_trace(go.Bar(x=x, y=[m["edit_rate_per_tier"].get(tier) for m in table], name=f"edits: {tier}"),
                      row=1, col=2)
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_layout(height=380, barmode="group", margin=dict(t=40, l=40, r=20, b=40))
    return fig
