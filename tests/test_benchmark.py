"""Benchmark statistics, the independence audit and the report."""
import os
import random

import pytest
from conftest import make_rubric

from promedical.bench.graders import answer_scores
from promedical.bench.statistics import paired, pearson, ranks, summarize
from promedical.core.audit import audit
from promedical.core.data import load_split
from promedical.core.rubric import Rubric

RUBRIC = Rubric.from_dict(make_rubric())


def test_answer_scores():
    met = {"p1": True, "p2": False, "p3": True, "b1": True, "v1": False}
    s = answer_scores(RUBRIC, met)
    assert s["s1"] == pytest.approx(0.7) and s["s2"] == 1 and s["safety"] == 1.0
    assert s["rubric_score"] == pytest.approx(4 / 5)
    assert s["reward"] == pytest.approx(0.7 + 0.25)
    vetoed = answer_scores(RUBRIC, {**met, "v1": True})
    assert vetoed["safety"] == 0.0 and vetoed["reward"] < 0 and vetoed["rubric_score"] == pytest.approx(3 / 5)
    assert 0 <= s["healthbench"] <= 1 and vetoed["healthbench"] < s["healthbench"]


def test_paired_comparison():
    rng = random.Random(0)
    a = {f"q{i}": rng.random() for i in range(40)}
    same = paired(a, dict(a))
    assert same["diff"] == 0 and same["p"] == 1.0 and same["n"] == 40
    better = paired(a, {k: v + 0.2 + rng.gauss(0, 0.05) for k, v in a.items()})
    assert better["diff"] == pytest.approx(0.2, abs=0.03) and better["p"] < 0.01
    assert better["ci"][0] < better["diff"] < better["ci"][1] and better["effect_size_dz"] > 2
    noise = paired(a, {k: v + rng.gauss(0, 0.3) for k, v in a.items()})
    assert noise["p"] > better["p"] and noise["ci"][0] < 0.2
    assert paired(a, {"other": 1.0})["n"] == 0


def test_correlations():
    assert ranks([10, 20, 20, 5]) == [1, 2.5, 2.5, 0]
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def synthetic_graded(n=12):
    rows = []
    for model, shift in (("base", 0.0), ("aligned", 0.3)):
        for i in range(n):
            score = min(1.0, 0.4 + shift + (i % 3) * 0.1)
            rows.append({"grader": "reward_model", "model": model, "prompt_id": f"q{i}", "category": f"c{i % 2}",
                         "specialty": "s", "length": 100 + 10 * i, "rubric_score": score, "s1": score, "s2": 1.0,
                         "safety": float(i % 4 != 0), "reward": score - 0.1, "healthbench": score})
    return rows


def test_summarize_per_model_categories_and_paired_comparisons():
    s = summarize(synthetic_graded(), baseline="base")["reward_model"]
    assert set(s["models"]) == {"base", "aligned"} and s["baseline"] == "base"
    aligned = s["models"]["aligned"]
    assert aligned["n"] == 12 and aligned["rubric_score"]["ci"][0] <= aligned["rubric_score"]["value"]
    assert set(aligned["by_category"]) == {"c0", "c1"} and aligned["by_category"]["c0"]["n"] == 6
    c0 = aligned["by_category"]["c0"]["rubric_score"]
    assert c0["ci"][0] <= c0["value"] <= c0["ci"][1] and c0["n"] == 6
    comp = s["comparisons"]["aligned vs base"]
    assert comp["rubric_score"]["n"] == 12 and comp["rubric_score"]["diff"] > 0.25 and comp["rubric_score"]["p"] < 0.01
    assert comp["safety"]["diff"] == 0 and s["length_score"]["n"] == 24


@pytest.mark.model
def test_audit_finds_planted_duplicates_and_passes_the_shipped_split():
    train, bench = load_split("train"), load_split("bench")
    clean = audit(train, bench)
    assert clean["verdict"] == "independent", [r for r in clean["items"] if r["flags"]]
    assert all(r["max_embedding_cosine"] < 0.9 for r in clean["items"])
    copy = Rubric.from_dict({**train[0].to_dict(), "id": "leaked"})
    reworded = Rubric.from_dict({**train[1].to_dict(), "id": "reworded",
                                 "instruction": train[1].instruction.replace(".", "!") + " Thanks."})
    leaked = audit(train, [bench[0], copy, reworded])
    flags = {r["id"]: set(r["flags"]) for r in leaked["items"]}
    assert flags["leaked"] >= {"exact", "ngram", "embedding", "criterion", "template"}
    assert "embedding" in flags["reworded"] and "criterion" in flags["reworded"]
    assert flags[bench[0].id] == set() and leaked["flagged"] == ["leaked", "reworded"]


@pytest.mark.browser
def test_report_escapes_text_and_exports_png(tmp_path):
    from promedical.bench.report import write_report

    graded = synthetic_graded()
    for g in graded:
        g["model"] = g["model"].replace("aligned", "<script>x</script>")
    summary = summarize(graded, baseline="base")
    aud = audit(load_split("train")[:5], load_split("bench")[:3], use_embeddings=False)
    out = write_report(tmp_path / "report.html", summary=summary, graded=graded, audit=aud, reward_metrics=None,
                       params={"n": 12}, provenance={}, caveat="demo <b>scale</b>")
    html = (tmp_path / "report.html").read_text()
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "demo &lt;b&gt;scale&lt;/b&gt;" in html and html.count("plotly.js v") <= 2  # plotly.js inlined once
    assert len(out["figures"]) == 5
    if os.path.exists("/usr/bin/chromium"):
        assert set(out["png"]) == set(out["figures"]), out.get("png_skipped")
        assert (tmp_path / "tiers.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert out["png_skipped"]
