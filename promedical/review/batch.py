"""Batch review: JSONL review records applied unattended, and unattended policies for the remaining drafts."""
from __future__ import annotations

import copy
from pathlib import Path

from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import TIERS, Problem, Rubric, RubricError, rubric_problems
from promedical.review.config import REVIEW_POLICIES
from promedical.review.session import DECISIONS, EDIT_FIELDS, ReviewSession, _valid_weight
from promedical.rubrics.store import Revision, RubricStore, StaleRevisionError

REVIEW_KEYS = ("rubric_id", "reviewer", "decision", "comment", "edits", "add", "remove", "retier")


# ----------------------------------------------------------------------------------------------
# Batch review (JSONL of review records) and unattended policies
# ----------------------------------------------------------------------------------------------
def _record_problems(rec, known: dict) -> list[tuple[str, str]]:
    if not isinstance(rec, dict):
        return [("<record>", "must be a JSON object")]
    out = [(k, f"unknown field (expected one of: {', '.join(REVIEW_KEYS)})") for k in rec if k not in REVIEW_KEYS]
    rid = rec.get("rubric_id")
    if not isinstance(rid, str) or not rid.strip():
        out.append(("rubric_id", "missing or empty"))
    elif rid not in known:
        out.append(("rubric_id", f"unknown rubric {rid!r} (not in the store)"))
    if not isinstance(rec.get("reviewer"), str) or not rec["reviewer"].strip():
        out.append(("reviewer", "missing or empty (a reviewer name is required)"))
    if rec.get("decision") not in DECISIONS:
        out.append(("decision", f"must be one of {', '.join(DECISIONS)}, got {rec.get('decision')!r}"))
    if not isinstance(rec.get("comment", ""), str):
        out.append(("comment", "must be a string"))
    ids = {c.get("id") for c in known[rid]["criteria"]} if isinstance(rid, str) and rid in known else None
    shapes = {"edits": ("criterion", "field", "value"), "add": ("tier", "text", "dimension", "weight"),
              "retier": ("criterion", "tier")}
    for key in ("edits", "add", "retier", "remove"):
        items = rec.get(key, [])
        if not isinstance(items, list):
            out.append((key, "must be a list"))
            continue
        for i, item in enumerate(items):
            p = f"{key}[{i}]"
            cid = item if key == "remove" else item.get("criterion") if isinstance(item, dict) else None
            if key != "add" and ids is not None and (not isinstance(cid, str) or cid not in ids):
                out.append((p if key == "remove" else f"{p}.criterion", f"unknown criterion {cid!r} in rubric {rid!r}"))
            if key == "remove":
                continue
            if not isinstance(item, dict):
                out.append((p, "must be an object"))
                continue
            out += [(f"{p}.{k}", f"unknown field (expected one of: {', '.join(shapes[key])})")
                    for k in item if k not in shapes[key]]
            if key == "edits":
                if item.get("field") not in EDIT_FIELDS:
                    out.append((f"{p}.field", f"must be one of {', '.join(EDIT_FIELDS)}, got {item.get('field')!r}"))
                elif "value" not in item:
                    out.append((f"{p}.value", "missing"))
                elif item["field"] == "weight" and item["value"] is not None and not _valid_weight(item["value"]):
                    out.append((f"{p}.value", f"a weight must be a positive number, got {item['value']!r}"))
                elif item["field"] in ("text", "tier") and not isinstance(item["value"], str):
                    out.append((f"{p}.value", "must be a string"))
                elif item["field"] in ("dimension", "adheres", "violates") and not isinstance(item["value"], (str, type(None))):
                    out.append((f"{p}.value", "must be a string or null"))
            if key in ("add", "retier") and item.get("tier") not in TIERS:
                out.append((f"{p}.tier", f"unknown tier {item.get('tier')!r} (expected one of: {', '.join(TIERS)})"))
            if key == "add":
                if not isinstance(item.get("text"), str) or not item["text"].strip():
                    out.append((f"{p}.text", "missing or empty"))
                if item.get("weight") is not None and not _valid_weight(item["weight"]):
                    out.append((f"{p}.weight", f"must be a positive number, got {item['weight']!r}"))
    return out


def _apply_record(session: ReviewSession, rec: dict) -> None:
    """Apply one review record's operations to a session: re-tier, edits, removals, additions."""
    for r in rec.get("retier", []):
        session.set_tier(r["criterion"], r["tier"])
    for e in rec.get("edits", []):
        session.edit(e["criterion"], e["field"], e["value"])
    for cid in rec.get("remove", []):
        session.reject(cid)
    for a in rec.get("add", []):
        session.add(a["tier"], a["text"], a.get("dimension"), a.get("weight"))
    session.comment = rec.get("comment", "")


def _session_on(store: RubricStore, base: Revision, reviewer: str, rubric: dict) -> ReviewSession:
    s = ReviewSession(store, base.rubric_id, reviewer, autosave=False, resume=False, revision=base)
    s.rubric = copy.deepcopy(rubric)
    return s


def apply_reviews(store: RubricStore, reviews_path: str | Path) -> dict:
    """Apply a JSONL of review records; raises RubricError (nothing applied) listing every problem.

    Only the rubrics the file names are read. Every record is tried on an in-memory copy first
    (records for one rubric apply in file order); then all revisions are saved in ONE transaction,
    each based on the revision the dry run started from: if another reviewer saved one of these
    rubrics in between, StaleRevisionError is raised and nothing at all is written.
    """
    name = str(reviews_path)
    lines = list(iter_jsonl(reviews_path))
    wanted = [rec["rubric_id"] for _, rec, err in lines
              if err is None and isinstance(rec, dict) and isinstance(rec.get("rubric_id"), str)]
    bases = store.current(wanted)
    known = {rid: rev.rubric.to_dict() for rid, rev in bases.items()}
    number = {rid: rev.revision for rid, rev in bases.items()}
    items, problems = [], []
    for line, rec, err in lines:
        if err:
            problems.append(Problem(name, line, "<line>", err))
            continue
        found = _record_problems(rec, known)
        problems += [Problem(name, line, p, m) for p, m in found]
        if found:
            continue
        rid = rec["rubric_id"]
        s = _session_on(store, bases[rid], rec["reviewer"], known[rid])
        try:
            _apply_record(s, rec)
        except KeyError as exc:
            problems.append(Problem(name, line, "criterion", str(exc.args[0])))
            continue
        res_problems = s.problems()
        problems += [Problem(name, line, *p.split(": ", 1)) for p in res_problems]
        if res_problems:
            continue
        known[rid] = s.result()
        items.append({"rubric": Rubric.from_dict(known[rid]), "author": s.reviewer, "action": "review",
                      "status": DECISIONS[rec["decision"]], "reason": s.comment, "base_revision": number[rid]})
        number[rid] += 1
    if not lines and not problems:
        problems.append(Problem(name, 0, "<file>", "file is empty (no review records)"))
    if problems:
        raise RubricError(problems)
    summary = {"applied": 0, "approved": 0, "rejected": 0, "in_review": 0, "revisions": []}
    for rev in store.save_many(items):
        summary["applied"] += 1
        summary[rev.status] += 1
        summary["revisions"].append({"rubric_id": rev.rubric_id, "revision": rev.revision,
                                     "reviewer": rev.author, "status": rev.status})
    return summary


def draft_problems(rubric: dict) -> list[str]:
    """What blocks approval by policy: validation problems, no safety veto, duplicated criteria."""
    out = [f"{p}: {m}" for p, m in rubric_problems(rubric)]
    crit = [c for c in rubric.get("criteria") or [] if isinstance(c, dict)]
    if crit and not any(c.get("tier") == "veto" for c in crit):
        out.append("criteria: no veto criterion (S3): every rubric needs a safety veto")
    seen: dict[str, str] = {}
    for c in crit:
        key = " ".join(str(c.get("text", "")).casefold().split())
        if key in seen:
            out.append(f"criteria[{c.get('id')}].text: duplicates criteria[{seen[key]}]")
        seen.setdefault(key, c.get("id"))
    return out


def apply_policy(store: RubricStore, policy: str, reviewer: str) -> dict:
    """Unattended review of every draft. ``approve-valid``: approve valid drafts, reject the rest."""
    if policy not in REVIEW_POLICIES:
        raise ValueError(f"policy must be one of {REVIEW_POLICIES}, got {policy!r}")
    drafts = store.ids(status="draft")
    summary = {"policy": policy, "approved": [], "rejected": {}, "skipped": len(store) - len(drafts)}
    for rid in drafts:
        rev = store.latest(rid)
        if rev.status != "draft":  # another reviewer got there first
            summary["skipped"] += 1
            continue
        problems = draft_problems(rev.rubric.to_dict())
        s = ReviewSession(store, rid, reviewer, autosave=False, resume=False, revision=rev)
        s.comment = f"policy {policy}: " + ("; ".join(problems) if problems else "valid")
        try:
            s.save("rejected" if problems else "approved")
        except StaleRevisionError:  # saved by someone else since it was read: theirs stands
            summary["skipped"] += 1
            continue
        if problems:
            summary["rejected"][rid] = problems
        else:
            summary["approved"].append(rid)
    return summary
