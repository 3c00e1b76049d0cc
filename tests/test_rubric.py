import json
import time

import pytest
from conftest import make_rubric

from promedical.core.rubric import Check, Rubric, RubricError, count_list_items
from promedical.core.rubric_files import file_problems, read_rubrics


def problems_of(path):
    return [str(p) for p in file_problems(path)]


def test_valid_rubric_round_trips_losslessly(write_lines):
    rec = make_rubric(provenance={"source": "test"})
    rec["criteria"][0].update(dimension="Accuracy · Red flags", adheres="asks", violates="does not")
    path = write_lines([rec])
    assert problems_of(path) == []
    [rubric] = read_rubrics(path)
    assert rubric.to_dict() == rec
    assert Rubric.from_dict(json.loads(json.dumps(rubric.to_dict()))) == rubric


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r.pop("id"), "id: missing or empty"),
        (lambda r: r.update(instruction=""), "instruction: is empty"),
        (lambda r: r.update(instruction=5), "instruction: missing"),
        (lambda r: r.update(instruction=[{"role": "doctor", "content": "x"}]), "instruction[0].role: must be one of"),
        (lambda r: r.update(instruction=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
         "instruction[1].role: the last message must be from the user"),
        (lambda r: r.update(criteria=[]), "criteria: missing or empty"),
        (lambda r: r["criteria"][0].update(tier="main"), "criteria[0].tier: unknown tier 'main'"),
        (lambda r: r["criteria"][1].update(text="  "), "criteria[1].text: missing or empty"),
        (lambda r: r["criteria"][0].update(weight="0.5"), "criteria[0].weight: must be a number, got str"),
        (lambda r: r["criteria"][0].update(weight=-0.5), "criteria[0].weight: must be in (0, 1], got -0.5"),
        (lambda r: r["criteria"][0].update(weight=1.5), "criteria[0].weight: must be in (0, 1], got 1.5"),
        (lambda r: r["criteria"][0].update(weight=True), "criteria[0].weight: must be a number, got bool"),
        (lambda r: r["criteria"][0].pop("weight"), "criteria[0].weight: missing"),
        (lambda r: r["criteria"][0].update(weight=0.4), "criteria: proficiency weights sum to 0.9, must sum to 1"),
        (lambda r: r["criteria"][3].update(weight=0.1), "criteria[3].weight: only proficiency criteria carry a weight"),
        (lambda r: r["criteria"][1].update(id="p1"), "criteria[1].id: duplicate criterion id 'p1'"),
        (lambda r: r["criteria"][0].update(wieght=0.5), "criteria[0].wieght: unknown field"),
        (lambda r: r["criteria"][4].update(check={"mention_any": []}), "criteria[4].check.mention_any: must be a non-empty list"),
        (lambda r: r["criteria"][4].update(check={"min_words": 9, "max_words": 3}), "criteria[4].check.min_words: is greater than max_words"),
        (lambda r: r.update(criteria=[c for c in r["criteria"] if c["tier"] != "proficiency"]),
         "criteria: needs at least one proficiency criterion"),
    ],
)
def test_each_problem_is_named_with_file_line_and_field(write_lines, mutate, expected):
    good = make_rubric("r0")
    bad = make_rubric("r1")
    mutate(bad)
    path = write_lines([good, bad])
    problems = problems_of(path)
    assert problems, "the invalid record was accepted"
    assert any(p.startswith(f"{path}:2: ") and expected in p for p in problems), problems


def test_nan_weight_is_rejected_as_malformed_json(write_lines):
    line = json.dumps(make_rubric()).replace('"weight": 0.5', '"weight": NaN')
    [problem] = problems_of(write_lines([line]))
    assert ":1: <line>: malformed JSON: NaN is not valid JSON" in problem


def test_file_level_problems(tmp_path, write_lines):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert problems_of(empty) == [f"{empty}:0: <file>: file is empty (no records)"]
    bad_utf8 = write_lines([json.dumps(make_rubric()).encode() [:-2] + b"\xff\"}"])
    assert "not valid UTF-8" in problems_of(bad_utf8)[0]
    broken = write_lines([make_rubric("a"), "{not json", make_rubric("a")])
    problems = problems_of(broken)
    assert any(":2: <line>: malformed JSON" in p for p in problems)
    assert any(":3: id: duplicate id 'a' (first on line 1)" in p for p in problems)
    missing = tmp_path / "nope.jsonl"
    assert "cannot read" in problems_of(missing)[0]


def test_read_rubrics_raises_with_every_problem(write_lines):
    bad = make_rubric()
    bad["criteria"][0]["tier"] = "x"
    bad["criteria"][1]["text"] = ""
    with pytest.raises(RubricError) as exc:
        read_rubrics(write_lines([bad]))
    assert len(exc.value.problems) >= 2
    assert all(str(p).count(":") >= 3 for p in exc.value.problems)


def test_huge_inputs_fail_or_pass_fast(write_lines):
    many = [make_rubric(f"r{i}") for i in range(5000)]
    path = write_lines(many)
    t0 = time.perf_counter()
    assert problems_of(path) == []
    assert time.perf_counter() - t0 < 10
    deep = write_lines(["[" * 100000 + "]" * 100000])
    t0 = time.perf_counter()
    assert "malformed JSON" in problems_of(deep)[0]
    long_text = make_rubric()
    long_text["instruction"] = "a" * 9_000_000
    t0 = time.perf_counter()
    assert "over the" in problems_of(write_lines([long_text]))[0]
    assert time.perf_counter() - t0 < 10


def test_machine_checks():
    check = Check(mention_any=["A&E", "999"], mention_none=["no need to see"], min_words=3, min_list_items=2)
    good = "Go to a&e now:\n- call 999\n- do not drive yourself"
    assert check.met(good)
    assert not check.met(good.replace("a&e", "hospital").replace("999", "them"))
    assert not check.met(good + "\nThere is no need to see anyone.")
    assert not Check(max_words=3).met("one two three four")
    assert count_list_items("1. a\n2) b\n* c\n• d\n-not a bullet\n12345. no") == 4
