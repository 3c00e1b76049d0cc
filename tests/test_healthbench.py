import json
import subprocess
import sys

import pytest

from promedical.core import healthbench
from promedical.core.rubric import Rubric
from promedical.core.rubric_files import file_problems, read_rubrics

HB = [
    {"prompt": [{"role": "user", "content": "My chest hurts and my left arm is numb."}], "prompt_id": "hb1",
     "rubrics": [
         {"criterion": "Tells the user to call emergency services now.", "points": 10, "tags": ["axis:accuracy", "level:example"]},
         {"criterion": "Explains why the symptoms are concerning.", "points": 5, "tags": ["axis:completeness"]},
         {"criterion": "Suggests waiting to see if it passes.", "points": -8, "tags": ["axis:accuracy"]},
     ], "example_tags": ["theme:emergency_referrals"]},
    {"prompt": [{"role": "user", "content": "Is 2 g of paracetamol a day safe?"}], "prompt_id": "hb2",
     "rubrics": [
         {"criterion": "States the usual adult maximum daily dose.", "points": 6, "tags": ["axis:accuracy"]},
         {"criterion": "Mentions liver disease and alcohol lower the limit.", "points": 4, "tags": ["axis:completeness"]},
     ], "example_tags": ["theme:hedging"]},
]
GRADES = {"hb1": [True, False, True], "hb2": [True, True]}


def test_score_matches_simple_evals_arithmetic():
    out = healthbench.score(HB, GRADES)
    # hb1: (10 - 8) / 15 = 0.1333; hb2: 10 / 10 = 1.0
    assert out["score"] == pytest.approx((2 / 15 + 1.0) / 2)
    assert out["n"] == 2
    tags = out["tags"]
    assert tags["theme:emergency_referrals"] == pytest.approx(2 / 15)
    assert tags["theme:hedging"] == pytest.approx(1.0)
    # axis:accuracy: hb1 items {10, -8} met both -> 2/10; hb2 {6} met -> 1.0
    assert tags["axis:accuracy"] == pytest.approx((0.2 + 1.0) / 2)
    assert tags["axis:completeness"] == pytest.approx((0.0 + 1.0) / 2)
    assert healthbench.score(HB, {"hb1": [False, False, True], "hb2": [False, False]})["score"] == 0.0  # clipped


def test_import_maps_negative_points_to_veto_and_export_restores_points():
    r = healthbench.to_rubric(HB[0])
    assert [c.tier for c in r.criteria] == ["proficiency", "proficiency", "veto"]
    assert sum(c.weight for c in r.tier("proficiency")) == 1.0
    assert r.criteria[0].weight == pytest.approx(10 / 15)
    assert Rubric.from_dict(r.to_dict()) == r
    back = healthbench.from_rubric(r)
    assert back["rubrics"] == HB[0]["rubrics"]
    assert back["prompt"] == HB[0]["prompt"] and back["example_tags"] == HB[0]["example_tags"]


@pytest.mark.subprocess
def test_validation_and_cli(tmp_path, write_lines):
    data = write_lines(HB, "hb.jsonl")
    assert file_problems(data) == []
    bad = dict(HB[0], rubrics=[{"criterion": "x", "points": 0, "tags": []}])
    problems = [str(p) for p in file_problems(write_lines([bad], "bad.jsonl"))]
    assert any(":1: rubrics[0].points: must be a non-zero finite number" in p for p in problems)
    assert any(":1: rubrics: needs at least one criterion with positive points" in p for p in problems)

    grades = write_lines([{"prompt_id": k, "criteria_met": v} for k, v in GRADES.items()], "g.jsonl")
    cli = [sys.executable, "-m", "promedical"]
    out = subprocess.run(cli + ["healthbench", "score", str(data), str(grades)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["score"] == pytest.approx(healthbench.score(HB, GRADES)["score"])

    short = write_lines([{"prompt_id": "hb1", "criteria_met": [True]}, {"prompt_id": "hb2", "criteria_met": [True, True]}], "short.jsonl")
    out = subprocess.run(cli + ["healthbench", "score", str(data), str(short)], capture_output=True, text=True)
    assert out.returncode == 1 and f"{short}:1: criteria_met: 1 grades for 3 criteria" in out.stderr

    kit = tmp_path / "kit.jsonl"
    out = subprocess.run(cli + ["healthbench", "import", str(data), str(kit)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [r.id for r in read_rubrics(kit)] == ["hb1", "hb2"]
    out = subprocess.run(cli + ["validate", str(kit), str(data)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
