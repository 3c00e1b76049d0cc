import json
import subprocess
import sys

import pytest
from conftest import make_rubric

CLI = [sys.executable, "-m", "promedical"]


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)


@pytest.mark.subprocess
def test_validate_exit_codes(write_lines, tmp_path):
    good = write_lines([make_rubric("a"), make_rubric("b")], "good.jsonl")
    out = run("validate", good)
    assert out.returncode == 0 and "ok" in out.stdout
    bad_rec = make_rubric("c")
    bad_rec["criteria"][0]["tier"] = "essential"
    bad = write_lines([make_rubric("a"), bad_rec, "{"], "bad.jsonl")
    out = run("validate", good, bad)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0] == f"{bad}:2: criteria[0].tier: unknown tier 'essential' (expected one of: proficiency, bonus, veto)"
    assert lines[-1].startswith(f"{bad}:3: <line>: malformed JSON")
    assert "Traceback" not in out.stderr
    assert run("validate").returncode == 2
    assert run("frobnicate").returncode == 2


@pytest.mark.subprocess
def test_score_prints_one_line_per_response(write_lines):
    rubrics = write_lines([make_rubric("a")], "r.jsonl")
    grades = write_lines([
        {"prompt_id": "a", "response_id": "x", "criteria_met": {"p1": True, "p2": True, "p3": False, "b1": True, "v1": False}},
        {"prompt_id": "a", "response_id": "y", "criteria_met": {"p1": True, "p2": True, "p3": True, "b1": True, "v1": True}},
    ], "g.jsonl")
    out = run("score", rubrics, grades)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows[0] == {"prompt_id": "a", "response_id": "x", "s1": pytest.approx(0.8), "s2": 1, "s3": 0, "reward": pytest.approx(1.05)}
    assert rows[1]["s3"] == 1 and rows[1]["reward"] == pytest.approx(1.25 - 1.5)
    out = run("score", rubrics, grades, "--alpha", "0.5", "--headroom", "0.5", "--lam", "2")
    assert json.loads(out.stdout.splitlines()[0])["reward"] == pytest.approx(1.3)


@pytest.mark.subprocess
def test_score_reports_bad_grades_and_bad_params(write_lines):
    rubrics = write_lines([make_rubric("a")], "r.jsonl")
    grades = write_lines([
        {"prompt_id": "zz", "response_id": "x", "criteria_met": {}},
        {"prompt_id": "a", "response_id": "y", "criteria_met": {"p1": True}},
        {"prompt_id": "a", "response_id": "y", "criteria_met": {"p1": "yes"}},
    ], "g.jsonl")
    out = run("score", rubrics, grades)
    assert out.returncode == 1
    err = out.stderr
    assert f"{grades}:1: prompt_id: no rubric 'zz'" in err
    assert f"{grades}:2: criteria_met:" in err and "unknown is not 'not met'" in err
    assert f"{grades}:3: criteria_met: must be an object" in err
    out = run("score", rubrics, grades, "--lam", "1.0")
    assert out.returncode == 2 and "lam must be" in out.stderr
