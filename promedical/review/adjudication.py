"""Adjudication of blind double reviews that disagree.

:func:`disagreements` lists a round's rubrics whose reviewers all submitted and differ (decision or
any field). :func:`side_by_side` lays the reviews next to the draft with a field-level diff: one row
per (criterion, field) that any reviewer changed or on which they differ. :func:`resolve` takes the
adjudicator's choice — one reviewer's review, or a merge of field picks — with a reason (required),
writes ONE store revision (action ``adjudication``, author the adjudicator, the reason naming both
reviews) based on the draft revision, and records the adjudication in the team file, which keeps
both blind reviews. An adjudicator may not be one of the rubric's reviewers — compared as people
(:func:`promedical.review.names.reviewer_key`: ``Ana``, ``ana`` + U+200B and ``ａｎａ`` are one).
:func:`unresolved` lists what keeps a round open (the batch summary waits until it is closed).
"""
from __future__ import annotations

import copy

from promedical.core.rubric import Rubric
from promedical.review.names import clean_name, reviewer_key
from promedical.review.queues import reviews_agree
from promedical.review.team import Review, TeamError, TeamStore
from promedical.rubrics.store import Revision, RubricStore

FIELDS = ("text", "tier", "dimension", "weight", "adheres", "violates", "check")


RUBRIC_FIELDS = ("instruction", "category", "specialty")


ABSENT = "(removed)"


def _pending(store: RubricStore, team: TeamStore, rnd: int, rid: str) -> list[Review] | None:
    assigned = team.assignments(rnd, rubric_id=rid)
    reviews = team.reviews(rnd, rubric_id=rid)
    if len(assigned) < 2 or len(reviews) < len(assigned) or team.adjudications(rnd, rid) or reviews_agree(reviews):
        return None
    latest = store.latest(rid)
    if latest is None or latest.revision != assigned[0].base_revision:
        return None  # the store moved on (resolved, or edited outside the round): nothing to adjudicate here
    return reviews


def disagreements(store: RubricStore, team: TeamStore, round: int | None = None) -> list[str]:
    """Rubric ids of a round waiting for adjudication, in assignment order."""
    rnd = team.round(round)["round"]
    ids = list(dict.fromkeys(a.rubric_id for a in team.assignments(rnd)))
    return [rid for rid in ids if _pending(store, team, rnd, rid) is not None]


def unresolved(store: RubricStore, team: TeamStore, round: int | None = None) -> list[str]:
    """Rubric ids that keep a round open: not assigned, a reviewer has not submitted, or a
    disagreement waits for adjudication. A round is *closed* when this is empty (and it has rubrics)."""
    rnd = team.round(round)
    out = []
    for rid in rnd["rubric_ids"]:
        assigned = team.assignments(rnd["round"], rubric_id=rid)
        if (not assigned or len(team.reviews(rnd["round"], rubric_id=rid)) < len(assigned)
                or _pending(store, team, rnd["round"], rid) is not None):
            out.append(rid)
    return out


def round_closed(store: RubricStore, team: TeamStore, round: int | None = None) -> bool:
    return bool(team.round(round)["rubric_ids"]) and not unresolved(store, team, round)


def side_by_side(store: RubricStore, team: TeamStore, rubric_id: str, round: int | None = None) -> dict:
    """Draft and reviews of one rubric with the field-level diff.

    ``rows``: ``{"criterion", "field", "draft", "values": {reviewer: value}, "agree": bool}`` for
    every field that a reviewer changed or on which reviewers differ (criterion None: the rubric's
    own fields and its ``decision``). A criterion that a reviewer removed or added is one row,
    field ``criterion``, its text per reviewer (``(removed)`` where it is not there).
    """
    rnd = team.round(round)["round"]
    reviews = team.reviews(rnd, rubric_id=rubric_id)
    assigned = team.assignments(rnd, rubric_id=rubric_id)
    if not assigned or not reviews:
        raise TeamError(f"rubric {rubric_id!r} has no submitted review in round {rnd}")
    draft = store.get(rubric_id, assigned[0].base_revision).rubric
    names = [r.reviewer for r in reviews]
    rows = [{"criterion": None, "field": "decision", "draft": "draft",
             "values": {r.reviewer: r.decision for r in reviews}}]
    for f in RUBRIC_FIELDS:
        rows.append({"criterion": None, "field": f, "draft": getattr(draft, f),
                     "values": {r.reviewer: getattr(r.rubric, f) for r in reviews}})
    crit = [{c.id: c.to_dict() for c in r.rubric.criteria} for r in reviews]
    before = {c.id: c.to_dict() for c in draft.criteria}
    order = list(before) + [cid for cs in crit for cid in cs if cid not in before]
    for cid in dict.fromkeys(order):
        if any(cid not in cs for cs in crit) or cid not in before:  # removed or added by someone: whole criterion
            rows.append({"criterion": cid, "field": "criterion",
                         "draft": before[cid]["text"] if cid in before else ABSENT,
                         "values": {n: cs[cid]["text"] if cid in cs else ABSENT for n, cs in zip(names, crit)}})
            continue
        for f in FIELDS:
            rows.append({"criterion": cid, "field": f, "draft": before[cid].get(f),
                         "values": {n: cs[cid].get(f) for n, cs in zip(names, crit)}})
    out = []
    for row in rows:
        vals = list(row["values"].values())
        changed = any(v != row["draft"] for v in vals) if row["field"] != "decision" else True
        if changed or len({repr(v) for v in vals}) > 1:
            row["agree"] = len({repr(v) for v in vals}) == 1
            out.append(row)
    return {"round": rnd, "rubric_id": rubric_id, "draft": draft, "reviews": reviews, "rows": out,
            "reviewers": names}


def merge(draft: Rubric, reviews: list[Review], picks: dict[str, str], base: str) -> tuple[dict, str]:
    """The merged rubric dict and decision: ``base``'s review with picked parts from other reviews.

    ``picks`` keys: ``"decision"``, a rubric field (``"instruction"``…), a criterion id (the whole
    criterion as that reviewer has it, removed if they removed it) or ``"<criterion id>.<field>"``;
    values: reviewer names.
    """
    who = {reviewer_key(r.reviewer): r.reviewer for r in reviews}  # a pick names a person, however spelled
    unknown = sorted({str(v) for v in [*picks.values(), base] if reviewer_key(v) not in who})
    if unknown:
        raise TeamError(f"no review by {', '.join(map(repr, unknown))} (reviewers: {', '.join(who.values())})")
    picks = {k: who[reviewer_key(v)] for k, v in picks.items()}
    base = who[reviewer_key(base)]
    by = {r.reviewer: r for r in reviews}
    out = copy.deepcopy(by[base].rubric.to_dict())
    decision = by[base].decision
    known = {c.id for c in draft.criteria} | {c.id for r in reviews for c in r.rubric.criteria}

    def crit_of(who: str, cid: str):
        return next((c.to_dict() for c in by[who].rubric.criteria if c.id == cid), None)

    def put(cid: str, value) -> None:
        ids = [c["id"] for c in out["criteria"]]
        if value is None:
            out["criteria"] = [c for c in out["criteria"] if c["id"] != cid]
        elif cid in ids:
            out["criteria"][ids.index(cid)] = value
        else:
            out["criteria"].append(value)

    for key, who in picks.items():
        if key == "decision":
            decision = by[who].decision
        elif key in RUBRIC_FIELDS:
            out[key] = getattr(by[who].rubric, key)
        elif key in known:
            put(key, copy.deepcopy(crit_of(who, key)))
        elif "." in key and key.rsplit(".", 1)[0] in known and key.rsplit(".", 1)[1] in FIELDS:
            cid, field = key.rsplit(".", 1)
            theirs, mine = crit_of(who, cid), next((c for c in out["criteria"] if c["id"] == cid), None)
            if theirs is None or mine is None:
                raise TeamError(f"pick {key!r}: criterion {cid!r} is removed in one of the reviews; pick it whole")
            if field in theirs:
                mine[field] = copy.deepcopy(theirs[field])
            else:
                mine.pop(field, None)
        else:
            raise TeamError(f"unknown pick {key!r}: use decision, a rubric field, a criterion id or 'id.field'")
    return out, decision


def resolve(store: RubricStore, team: TeamStore, rubric_id: str, adjudicator: str, reason: str, *,
            choice: str | None = None, picks: dict[str, str] | None = None, round: int | None = None) -> Revision:
    """Resolve a disagreement: ``choice`` (a reviewer's review as it is) or ``picks`` merged on top
    of ``choice`` (default: the first review). Writes the store revision and the adjudication record."""
    from promedical.review.session import normalise_weights

    rnd = team.round(round)["round"]
    if not clean_name(adjudicator):
        raise TeamError("the adjudicator must be named")
    if not isinstance(reason, str) or not reason.strip():
        raise TeamError("an adjudication needs a reason")
    reviews = _pending(store, team, rnd, rubric_id)
    if reviews is None:
        raise TeamError(f"rubric {rubric_id!r} of round {rnd} is not waiting for adjudication")
    own = next((r.reviewer for r in reviews if reviewer_key(r.reviewer) == reviewer_key(adjudicator)), None)
    if own is not None:  # compared as people: case, width and invisible characters do not make another one
        raise TeamError(f"{adjudicator!r} is {own!r}, who reviewed rubric {rubric_id!r}: "
                        "another clinician must adjudicate it")
    adjudicator = team.canonical(adjudicator)  # an existing name spelled differently is refused
    assigned = team.assignments(rnd, rubric_id=rubric_id)
    draft = store.get(rubric_id, assigned[0].base_revision).rubric
    merged, decision = merge(draft, reviews, picks or {}, choice or reviews[0].reviewer)
    who = {reviewer_key(r.reviewer): r.reviewer for r in reviews}
    base = who[reviewer_key(choice or reviews[0].reviewer)]
    picks = {k: who[reviewer_key(v)] for k, v in (picks or {}).items()}
    s1 = [c for c in merged["criteria"] if c.get("tier") == "proficiency"]
    if s1 and all(isinstance(c.get("weight"), (int, float)) and c["weight"] > 0 for c in s1):
        for c, w in zip(s1, normalise_weights([c["weight"] for c in s1])):
            c["weight"] = w
    rubric = Rubric.from_dict(merged)  # RubricError when a merge is not a valid rubric
    kind = "merge" if any(v != base for v in (picks or {}).values()) else base
    names = ", ".join(f"{r.reviewer} (review #{r.seq}, {r.decision})" for r in reviews)
    rev = store.save(rubric, author=adjudicator, action="adjudication", status=decision,
                     reason=f"{reason.strip()} [adjudicated round {rnd}: {'merged' if kind == 'merge' else 'picked ' + kind}"
                            f"; blind reviews: {names}]",
                     base_revision=assigned[0].base_revision)
    team.add_adjudication(round=rnd, rubric_id=rubric_id, adjudicator=adjudicator, choice=kind,
                          reason=reason.strip(), decision=decision, revision=rev.revision,
                          picks={"base": base, **(picks or {})})
    return rev


def history(store: RubricStore, team: TeamStore, rubric_id: str) -> dict:
    """The whole story of a rubric: store revisions, every blind review, every adjudication."""
    return {"revisions": store.history(rubric_id), "reviews": team.reviews(rubric_id=rubric_id),
            "adjudications": team.adjudications(rubric_id=rubric_id)}
