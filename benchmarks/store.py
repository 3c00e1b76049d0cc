"""Rubric store at scale: import 5k and 50k rubrics, then a widget-style read/edit/save loop.

    nice -n 10 python benchmarks/store.py [--sizes 5000 50000] [--chunk 1000] [--loop 200] [--legacy 300]

For each size, synthetic valid rubrics (3–5 weighted proficiency criteria, 1–2 bonus, 1–2 veto,
category, specialty, a ~300-character instruction; generated before the clock starts) are imported
into a fresh store in calls of ``--chunk`` rubrics. Prints rubrics/s and the cost per rubric of the
first and last 5 % of the calls: their ratio is ~1 when the cost per rubric stays flat as the store
grows (target: 50k in ≤ 60 s). Then ``--loop`` rubrics spread over the store go through what the
reviewer widget does: open a session (latest revision, autosave on), five edits — each autosaved
to disk and followed by the widget's problems + diff — and an approve; ms per open, edit and save.
Last, the reviewer widget itself is opened on the whole store and one keystroke timed.

``--legacy N`` imports N rubrics into the previous JSONL store (loaded from git, ``--legacy-rev``)
for comparison: its cost per rubric grows with the log. 0 skips it.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promedical.core.rubric import Rubric
from promedical.review.session import ReviewSession
from promedical.rubrics.store import RubricStore

CATEGORIES = ["triage_emergency", "chronic_care", "medication", "prevention", "mental_health"]
SPECIALTIES = ["pulmonology", "cardiology", "pediatrics", "dermatology", "psychiatry", "general"]
WORDS = ("cough fever pain chest breath rash child dose blood pressure sleep anxiety weeks days "
         "sudden worse better doctor clinic medicine allergy swelling headache dizzy tired").split()


def synthetic_rubrics(n: int, seed: int = 0) -> list[Rubric]:
    rng = random.Random(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    out = []
    for i in range(n):
        n_p = rng.randint(3, 5)
        raw = [rng.randint(1, 5) for _ in range(n_p)]
        weights = [w / sum(raw) for w in raw[:-1]]
        weights.append(1.0 - sum(weights))
        crit = [{"id": f"p{j + 1}", "tier": "proficiency", "text": sentence(10), "weight": w,
                 "dimension": rng.choice(["Accuracy", "Completeness", "Communication"])}
                for j, w in enumerate(weights)]
        crit += [{"id": f"b{j + 1}", "tier": "bonus", "text": sentence(8)} for j in range(rng.randint(1, 2))]
        crit += [{"id": f"v{j + 1}", "tier": "veto", "text": sentence(8)} for j in range(rng.randint(1, 2))]
        out.append(Rubric.from_dict({"id": f"syn-{seed}-{i:06d}", "instruction": sentence(50),
                                     "category": rng.choice(CATEGORIES), "specialty": rng.choice(SPECIALTIES),
                                     "criteria": crit}))
    return out


def timed_import(store, rubrics: list[Rubric], chunk: int) -> dict:
    per_call = []
    t0 = time.perf_counter()
    for i in range(0, len(rubrics), chunk):
        part = rubrics[i:i + chunk]
        t = time.perf_counter()
        store.import_rubrics(part, author="bench-import")
        per_call.append((time.perf_counter() - t) / len(part))
    total = time.perf_counter() - t0
    k = max(1, len(per_call) // 20)  # first and last 5 % of the calls
    start, end = sum(per_call[:k]) / k, sum(per_call[-k:]) / k
    return {"rubrics": len(rubrics), "seconds": round(total, 2), "rubrics_per_s": round(len(rubrics) / total),
            "us_per_rubric_start": round(start * 1e6), "us_per_rubric_end": round(end * 1e6),
            "cost_ratio_end_over_start": round(end / start, 2)}


def review_loop(store: RubricStore, n: int, seed: int = 1) -> dict:
    ids = store.ids()
    rng = random.Random(seed)
    picks = rng.sample(ids, min(n, len(ids)))
    t_open = t_edit = t_save = 0.0
    edits = 0
    for rid in picks:
        t = time.perf_counter()
        s = ReviewSession(store, rid, "bench-reviewer")
        s.history()  # the widget shows the history when it opens a rubric
        t_open += time.perf_counter() - t
        text = s.criterion("p1")["text"]
        for k in range(5):
            t = time.perf_counter()
            s.edit("p1", "text", text + " Edited" + "!" * k)
            s.normalised_weights(), s.problems(), s.diff()  # what the widget renders after an edit
            t_edit += time.perf_counter() - t
            edits += 1
        t = time.perf_counter()
        s.save("approved")
        t_save += time.perf_counter() - t
    return {"rubrics": len(picks), "ms_open": round(1e3 * t_open / len(picks), 2),
            "ms_edit_with_autosave": round(1e3 * t_edit / edits, 2), "ms_save": round(1e3 * t_save / len(picks), 2)}


def widget_open(store: RubricStore) -> dict:
    try:
        from widgets.reviewer import RubricReviewer
    except ImportError as exc:  # ipywidgets missing
        return {"skipped": str(exc)}
    t = time.perf_counter()
    app = RubricReviewer(store, "bench-widget")
    opened = time.perf_counter() - t
    row = next(iter(app.rows.values()))
    t = time.perf_counter()
    row.text.value = row.text.value + " typed"
    return {"s_open_whole_store": round(opened, 3), "ms_keystroke": round(1e3 * (time.perf_counter() - t), 2)}


def legacy_import(n: int, rev: str, tmp: Path, chunk: int) -> dict:
    """The JSONL store of git ``rev`` (``promedical/store.py`` then, with its sibling modules ``rubric``
    and ``files``), loaded as a package of its own beside today's kit."""
    package = types.ModuleType("_legacy_promedical")
    package.__path__ = []
    sys.modules[package.__name__] = package
    for name in ("rubric", "files", "store"):
        try:
            src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:promedical/{name}.py"],
                                 capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            return {"skipped": f"cannot load the JSONL store from git {rev!r}: {exc}"}
        mod = types.ModuleType(f"{package.__name__}.{name}")
        mod.__package__ = package.__name__
        sys.modules[mod.__name__] = mod  # relative imports and dataclasses look their module up
        exec(compile(src, f"{rev}:promedical/{name}.py", "exec"), mod.__dict__)
    store = sys.modules[f"{package.__name__}.store"].RubricStore(tmp / "legacy")
    return timed_import(store, synthetic_rubrics(n, seed=9), chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=200)
    ap.add_argument("--legacy", type=int, default=300)
    ap.add_argument("--legacy-rev", default="ea99fed")
    args = ap.parse_args()
    if min(args.sizes) < 1 or args.chunk < 1 or args.loop < 0 or args.legacy < 0:
        ap.error("sizes and --chunk must be positive; --loop and --legacy non-negative")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            rubrics = synthetic_rubrics(n)
            store = RubricStore(tmp / f"store-{n}")
            len(store)  # create the database before the clock starts
            imp = timed_import(store, rubrics, args.chunk)
            print(f"import {n:>6}: {imp['seconds']:7.2f} s  {imp['rubrics_per_s']:>6} rubrics/s  "
                  f"{imp['us_per_rubric_start']} -> {imp['us_per_rubric_end']} us/rubric "
                  f"(end/start {imp['cost_ratio_end_over_start']})", flush=True)
            loop = review_loop(store, args.loop) if args.loop else {}
            if loop:
                print(f"review loop on {n:>6}: open {loop['ms_open']} ms, edit+autosave+render "
                      f"{loop['ms_edit_with_autosave']} ms, save {loop['ms_save']} ms ({loop['rubrics']} rubrics)",
                      flush=True)
            widget = widget_open(store)
            print(f"widget on {n:>6}: {widget}", flush=True)
            size_mb = round(sum(p.stat().st_size for p in store.root.iterdir() if p.is_file()) / 2**20, 1)
            results[n] = {"import": imp, "review_loop": loop, "widget": widget, "store_mb": size_mb}
            store.close()
        if args.legacy:
            legacy = legacy_import(args.legacy, args.legacy_rev, tmp, max(1, args.legacy // 10))
            if "skipped" not in legacy:
                print(f"JSONL store ({args.legacy_rev}), import {args.legacy}: {legacy['seconds']} s, "
                      f"{legacy['us_per_rubric_start']} -> {legacy['us_per_rubric_end']} us/rubric "
                      f"(end/start {legacy['cost_ratio_end_over_start']})", flush=True)
            results["legacy_jsonl"] = legacy
    print(json.dumps(results))


if __name__ == "__main__":
    main()
