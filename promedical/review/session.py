"""Clinician review of rubrics: one code path for the reviewer widget and for batch (papermill) runs.

A :class:`ReviewSession` holds a reviewer's working copy of one rubric, based on one stored revision.
Every change is autosaved atomically to ``store.root/autosave/`` (a 0700 folder, files 0600; restored by the next session of the
same reviewer on the same rubric, deleted by a successful save), so nothing typed is lost if the
kernel dies. An autosave's name is injective in (rubric id, reviewer) — a readable ASCII prefix plus
a SHA-256 of both — and the file holds both, checked on restore: ids ``a/b`` and ``a_b`` never share
one. Saving appends a revision to the :class:`~promedical.rubrics.store.RubricStore` with
``action="review"``, the comment as the reason and the session's base revision: when another
reviewer saved the rubric in between, the save is refused (:class:`~promedical.rubrics.store.StaleRevisionError`)
and the working copy and its autosave stay; :meth:`ReviewSession.rebase` puts the edits on top of the
latest revision (the diff then shows what they would change in it) and the next save goes through.
A session reads the store when it opens, saves, rebases or discards — never on an edit.

Weights: the working copy keeps the weights as typed (any positive numbers); what is validated,
diffed and saved is the *result*: rejected criteria removed and S1 weights rescaled to sum to 1.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path

from promedical.core.files import write_json
from promedical.core.rubric import Check, Criterion, Problem, Rubric, RubricError, rubric_problems
from promedical.rubrics.store import Revision, RubricStore, StaleRevisionError, diff_rubrics

EDIT_FIELDS = ("text", "tier", "dimension", "weight", "adheres", "violates")


SAVE_STATUSES = ("in_review", "approved", "rejected")


DECISIONS = {"approve": "approved", "reject": "rejected", "in_review": "in_review"}


PREFIX = {"proficiency": "p", "bonus": "b", "veto": "v"}


CRITERION_INDEX = re.compile(r"^criteria\[(\d+)\]")


def _safe(name: str) -> str:
    """The name format of the first autosaves (not injective: ``a/b`` and ``a_b`` both give ``a_b``)."""
    return re.sub(r"[^\w.-]", "_", name)


def autosave_name(rubric_id: str, reviewer: str) -> str:
    """File name of one reviewer's autosave of one rubric: injective in (rubric_id, reviewer).

    A short ASCII prefix for people browsing the folder, then 32 hex digits of the SHA-256 of the
    JSON pair — the hash, not the prefix, tells autosaves apart. Bounded length, no path separator.
    """
    def readable(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", s).lstrip(".")[:40] or "_"

    digest = hashlib.sha256(json.dumps([rubric_id, reviewer], ensure_ascii=True).encode()).hexdigest()[:32]
    return f"{readable(rubric_id)}.{readable(reviewer)}.{digest}.json"


def private_folder(folder: Path, top: Path) -> None:
    """Create ``folder`` and every folder from ``top`` down to it 0700 (existing ones are tightened):
    unsaved edits — a blind review among them — are their reviewer's until submitted."""
    folder, top = Path(folder), Path(top)
    chain = [folder] + [p for p in folder.parents if p == top or top in p.parents]
    for d in reversed(chain):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.stat(d).st_mode & 0o077:
            os.chmod(d, 0o700)


def _valid_weight(w) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0


def normalise_weights(weights: list[float]) -> list[float]:
    """Rescale positive weights to sum to 1; the last takes the float remainder (unchanged if already 1)."""
    total = math.fsum(weights)
    if total == 1.0:
        return list(weights)
    out = [w / total for w in weights[:-1]]
    return out + [1.0 - math.fsum(out)]


def loose_rubric(d: dict) -> Rubric:
    """A Rubric built without validation (for diffing a working copy that may be invalid)."""
    crit = []
    for c in d.get("criteria", []):
        chk = c.get("check")
        chk = Check(**{k: v for k, v in chk.items() if k in Check.__dataclass_fields__}) if isinstance(chk, dict) else None
        crit.append(Criterion(id=c.get("id"), tier=c.get("tier"), text=c.get("text"), weight=c.get("weight"),
                              dimension=c.get("dimension"), adheres=c.get("adheres"), violates=c.get("violates"),
                              check=chk, provenance=c.get("provenance")))
    return Rubric(id=d.get("id"), instruction=d.get("instruction"), criteria=crit, category=d.get("category"),
                  specialty=d.get("specialty"), provenance=d.get("provenance"))


class ReviewSession:
    """A reviewer's working copy of one rubric (restored from its autosave when there is one)."""

    def __init__(self, store: RubricStore, rubric_id: str, reviewer: str, *, autosave: bool = True,
                 resume: bool = True, revision: Revision | None = None):
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise ValueError("reviewer must be a non-empty name")
        latest = revision if revision is not None else store.latest(rubric_id)
        if latest is None:
            raise KeyError(f"unknown rubric {rubric_id!r} (not in {store.path})")
        self.store, self.rubric_id, self.reviewer = store, rubric_id, reviewer.strip()
        self.autosave_enabled = autosave
        self.restored = False
        self.latest = latest  # the latest stored revision as last read (open, save, refusal, rebase)
        self._start(latest)
        if resume:
            self._restore()

    # -- state -----------------------------------------------------------------------------------
    def _start(self, revision: Revision) -> None:
        self.base = revision  # the stored revision the working copy was made from
        self.rubric = revision.rubric.to_dict()
        self.decisions: dict[str, str] = {}
        self._comment = ""

    @property
    def base_revision(self) -> int:
        return self.base.revision

    @property
    def stored_status(self) -> str:
        return self.base.status

    @property
    def stale(self) -> bool:
        """True when the store held a newer revision than the base at the last read."""
        return self.latest.revision != self.base.revision

    @property
    def autosave_path(self) -> Path:
        return self.store.autosave_dir / autosave_name(self.rubric_id, self.reviewer)

    @property
    def _legacy_autosave_path(self) -> Path:
        return self.store.autosave_dir / f"{_safe(self.rubric_id)}.{_safe(self.reviewer)}.json"

    def state(self) -> dict:
        return {"rubric_id": self.rubric_id, "reviewer": self.reviewer, "base_revision": self.base_revision,
                "rubric": self.rubric, "decisions": self.decisions, "comment": self._comment}

    def _autosave(self) -> None:
        if self.autosave_enabled:
            private_folder(self.autosave_path.parent, self.store.autosave_dir)
            write_json(self.autosave_path, self.state(), mode=0o600)

    def _restore(self) -> None:
        path = self.autosave_path
        if not path.exists():
            legacy = self._legacy_autosave_path  # written before autosave names were injective
            if not legacy.exists():
                return
            path = legacy
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            owner = (state["rubric_id"], state["reviewer"])
            rubric, decisions, comment = state["rubric"], dict(state["decisions"]), str(state["comment"])
            base = int(state["base_revision"])
            if not isinstance(rubric, dict) or not isinstance(rubric.get("criteria"), list):
                raise ValueError("no rubric with a list of criteria")
            if rubric.get("id") != owner[0]:
                raise ValueError(f"its rubric has id {rubric.get('id')!r}, the autosave is for {owner[0]!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"{path}: unreadable autosave ignored ({exc})")
            return
        if owner != (self.rubric_id, self.reviewer):
            if path == self.autosave_path:  # a hash collision or a hand-copied file: say so
                warnings.warn(f"{path}: autosave of rubric {owner[0]!r} by {owner[1]!r}, not of rubric "
                              f"{self.rubric_id!r} by {self.reviewer!r}: ignored")
            return
        if base != self.base.revision:
            stored = self.store.get(self.rubric_id, base)
            if stored is None:
                warnings.warn(f"{path}: autosave based on revision {base}, which rubric "
                              f"{self.rubric_id!r} does not have: ignored")
                return
            self.base = stored
        self.rubric, self.decisions, self._comment = rubric, decisions, comment
        self.restored = True
        if path != self.autosave_path:  # move a legacy autosave to its injective name
            self._autosave()
            path.unlink(missing_ok=True)

    @classmethod
    def resume(cls, store: RubricStore, rubric_id: str, reviewer: str) -> "ReviewSession | None":
        """The session restored from its autosave, or None when there is no autosave."""
        s = cls(store, rubric_id, reviewer)
        return s if s.restored else None

    def discard(self) -> None:
        """Drop the unsaved edits (and the autosave) and start again from the latest stored revision."""
        self.autosave_path.unlink(missing_ok=True)
        self.latest = self.store.latest(self.rubric_id)
        self._start(self.latest)
        self.restored = False

    def refresh(self) -> Revision:
        """Re-read the latest stored revision (one indexed read); the working copy is not touched."""
        self.latest = self.store.latest(self.rubric_id)
        return self.latest

    def rebase(self) -> None:
        """Base the working copy on the latest stored revision, keeping every edit, decision and comment.

        After a refused (stale) save: the diff then shows what the edits change in the latest
        revision — including anything of the other reviewer's they would undo — and save() is accepted.
        """
        self.refresh()
        self.base = self.latest
        self._autosave()

    @property
    def comment(self) -> str:
        return self._comment

    @comment.setter
    def comment(self, value: str) -> None:
        self._comment = value
        self._autosave()

    @property
    def criteria(self) -> list[dict]:
        """Every criterion of the working copy, rejected ones included."""
        return self.rubric["criteria"]

    def criterion(self, cid: str) -> dict:
        for c in self.criteria:
            if c.get("id") == cid:
                return c
        raise KeyError(f"unknown criterion {cid!r} in rubric {self.rubric_id!r}")

    # -- mutations (each one autosaves) ----------------------------------------------------------
    def edit(self, criterion_id: str, field: str, value) -> None:
        if field not in EDIT_FIELDS:
            raise ValueError(f"field must be one of {EDIT_FIELDS}, got {field!r}")
        if field == "tier":
            return self.set_tier(criterion_id, value)
        c = self.criterion(criterion_id)
        if field != "text" and (value is None or value == ""):
            c.pop(field, None)
        else:
            c[field] = value
        self._autosave()

    def accept(self, cid: str) -> None:
        self.criterion(cid)
        self.decisions[cid] = "accept"
        self._autosave()

    def reject(self, cid: str) -> None:
        """Mark a criterion rejected: it stays in the session and is removed on save."""
        self.criterion(cid)
        self.decisions[cid] = "reject"
        self._autosave()

    def rejected(self, cid: str) -> bool:
        return self.decisions.get(cid) == "reject"

    def _default_weight(self) -> float:
        ws = [c.get("weight") for c in self._active() if c.get("tier") == "proficiency"]
        ws = [w for w in ws if _valid_weight(w)]
        return math.fsum(ws) / len(ws) if ws else 1.0

    def set_tier(self, cid: str, tier: str) -> None:
        """Re-tier: the weight is dropped when leaving proficiency, a default given when entering."""
        c = self.criterion(cid)
        if tier == "proficiency" and c.get("tier") != "proficiency":
            c["weight"] = self._default_weight()
        elif tier != "proficiency":
            c.pop("weight", None)
        c["tier"] = tier
        self._autosave()

    def new_id(self, tier: str) -> str:
        prefix = PREFIX.get(tier, "c")
        ids = {c.get("id") for c in self.criteria}
        nums = [int(m.group(1)) for i in ids if isinstance(i, str) and (m := re.fullmatch(rf"{prefix}(\d+)", i))]
        n = max(nums, default=0) + 1
        while f"{prefix}{n}" in ids:
            n += 1
        return f"{prefix}{n}"

    def add(self, tier: str, text: str, dimension: str | None = None, weight: float | None = None) -> str:
        """Add an (accepted) criterion; returns its new id."""
        cid = self.new_id(tier)
        c = {"id": cid, "tier": tier, "text": text}
        if tier == "proficiency":
            c["weight"] = weight if weight is not None else self._default_weight()
        elif weight is not None:
            c["weight"] = weight
        if dimension:
            c["dimension"] = dimension
        self.criteria.append(c)
        self.decisions[cid] = "accept"
        self._autosave()
        return cid

    def renormalise(self) -> bool:
        """Rescale the working S1 weights to sum to 1 exactly; False (no change) if any is invalid."""
        s1 = [c for c in self._active() if c.get("tier") == "proficiency"]
        if not s1 or not all(_valid_weight(c.get("weight")) for c in s1):
            return False
        for c, w in zip(s1, normalise_weights([c["weight"] for c in s1])):
            c["weight"] = w
        self._autosave()
        return True

    # -- the result: what would be saved ---------------------------------------------------------
    def _active(self) -> list[dict]:
        return [c for c in self.criteria if not self.rejected(c.get("id"))]

    def result(self) -> dict:
        """The rubric as it would be saved: rejected criteria removed, S1 weights renormalised."""
        out = copy.deepcopy({**self.rubric, "criteria": self._active()})
        s1 = [c for c in out["criteria"] if c.get("tier") == "proficiency"]
        if s1 and all(_valid_weight(c.get("weight")) for c in s1):
            for c, w in zip(s1, normalise_weights([c["weight"] for c in s1])):
                c["weight"] = w
        return out

    def normalised_weights(self) -> dict[str, float]:
        """Criterion id -> the S1 weight it would be saved with (empty while any weight is invalid)."""
        s1 = [c for c in self.result()["criteria"] if c.get("tier") == "proficiency"]
        return {c["id"]: c["weight"] for c in s1} if all(_valid_weight(c.get("weight")) for c in s1) else {}

    def problems(self) -> list[str]:
        """Validation problems of the result as ``field.path: message`` (criteria named by id)."""
        res = self.result()
        ids = [c.get("id") if isinstance(c, dict) else i for i, c in enumerate(res["criteria"])]

        def name(m):
            return f"criteria[{ids[int(m.group(1))]}]"

        return [CRITERION_INDEX.sub(name, p) + f": {msg}" for p, msg in rubric_problems(res)]

    def diff(self) -> list[dict]:
        """Changes of the result against the base revision (store.diff_rubrics); reads nothing."""
        return diff_rubrics(self.base.rubric, loose_rubric(self.result()))

    def history(self):
        return self.store.history(self.rubric_id)

    def save(self, status: str = "in_review"):
        """Append the result as a revision based on ``base_revision``.

        Raises RubricError (nothing written) if invalid, StaleRevisionError (nothing written; the
        working copy and its autosave are kept) when another save came after the base revision.
        """
        if status not in SAVE_STATUSES:
            raise ValueError(f"status must be one of {SAVE_STATUSES}, got {status!r}")
        problems = self.problems()
        if self.rubric.get("id") != self.rubric_id:
            problems.append(f"id: the working copy's id {self.rubric.get('id')!r} is not the rubric under review")
        if problems:
            raise RubricError([Problem(f"<review {self.rubric_id}>", 0, *p.split(": ", 1)) for p in problems])
        try:
            rev = self.store.save(Rubric.from_dict(self.result()), author=self.reviewer, action="review",
                                  status=status, reason=self._comment, base_revision=self.base_revision)
        except StaleRevisionError as exc:
            self.latest = exc.current if exc.current is not None else self.latest
            kept = None
            if self.autosave_enabled:
                self._autosave()  # even a session with no edit since opening keeps its text on disk
                kept = str(self.autosave_path)
            raise StaleRevisionError(exc.rubric_id, exc.base_revision, exc.current, kept=kept) from None
        if self.autosave_enabled:
            self.autosave_path.unlink(missing_ok=True)
        self.latest = rev
        self._start(rev)
        self.restored = False
        return rev
