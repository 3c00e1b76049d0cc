"""Inputs a hostile user controls, bounded as classes: scale YAML (repeated keys, deep nesting, anchors and
alias bombs, wrong shapes, size), the upper bounds of every size/count parameter of every step config,
``promedical score`` with a missing grade (unknown, never "not met"), and the id rule on imported labels."""
from __future__ import annotations

import json
import time
import typing

import pytest
from conftest import make_rubric

from promedical.app import cli
from promedical.core.config import ParameterError
from promedical.core.params import MAX_INT, MAX_SEED, UPPER_BOUNDS, bound_problem, params_problems
from promedical.corpus.config import DataConfig
from promedical.reward.labels import LabelError, load_labels
from promedical.scale.profiles import MAX_BYTES, MAX_DEPTH, load_scale
from promedical.steps import STEPS


# ---------------------------------------------------------------------------------------------- scale YAML
def scale(tmp_path, text: str | bytes, name="s.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def refused(tmp_path, text, fragment):
    path = scale(tmp_path, text)
    t0 = time.monotonic()
    with pytest.raises(ValueError) as info:
        load_scale(path)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message and len(message) < 400 and message.startswith(path)
    assert time.monotonic() - t0 < 5
    return message


@pytest.mark.parametrize("text,line", [
    ("model: a\nmodel: b\n", 2),
    ("model: a\nsteps: {grpo: {steps: 2, steps: 3}}\n", 2),
    ("launch:\n  num_processes: 1\n  num_processes: 8\n", 3),
    ("steps:\n  grpo: {steps: 2}\n  grpo: {steps: 3}\n", 3),
    ("launch: {vllm_server: {gpus: '6', gpus: '7'}}\nmodel: m\n", 1),
    ('"model": a\nmodel: b\n', 2),  # a quoted and a plain key are the same key
])
def test_a_repeated_key_is_refused_naming_it_and_its_line(tmp_path, text, line):
    refused(tmp_path, text, f"line {line}: repeated key")


@pytest.mark.parametrize("text", [
    "steps: " + "[" * 5000 + "]" * 5000 + "\n",
    "steps: {data: {columns: " + "{a: " * 5000 + "1" + "}" * 5000 + "}}\n",
    "launch:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)) + "  " * 201 + "x\n",
    "model:\n  " + "- " * 100 + "x\n",
])
def test_deep_nesting_is_one_line(tmp_path, text):
    refused(tmp_path, text, f"nested deeper than {MAX_DEPTH} levels")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text", [
    "model: &m embedded\nsteps: {grpo: {model: *m}}\n",  # a harmless alias: still refused (one rule)
    "launch: {train_gpus: &g [1, 2], gpu_memory_gib: *g}\n",
    "steps: {grpo: &p {steps: 1}, benchmark: *p}\n",
    "model: embedded\nsteps: {data: {columns: {<<: &c {prompt: q}}}}\n",  # merge keys need anchors too
    BOMB.replace("a: &a", "model: &a", 1),  # the billion-laughs shape: 9^9 items if expanded
    "steps: {data: {sources: *undefined}}\n",
])
def test_anchors_and_aliases_are_refused_before_anything_expands(tmp_path, text):
    refused(tmp_path, text, "anchors and aliases")


def test_a_scale_file_is_bounded_in_size_and_must_be_utf8(tmp_path):
    refused(tmp_path, "# " + "x" * MAX_BYTES + "\nmodel: embedded\n", f"at most {MAX_BYTES} bytes")
    refused(tmp_path, b"model: \xff\xfe\n", "not UTF-8")
    refused(tmp_path, "model: embedded\n" + "x: [" * 3, "malformed YAML")


@pytest.mark.parametrize("text,fragment", [
    ("[1]\n", "must be a mapping with keys model, steps, launch, got list"),
    ("just text\n", "got str"),
    ("steps: [1]\n", "steps: must map a step name to its parameters"),
    ("steps: 3\n", "steps: must map a step name"),
    ("steps: {grpo: [1]}\n", "steps.grpo: must be a mapping of parameters, got list"),
    ("steps: {grpo: {1: 2}}\n", "steps.grpo: parameter names are strings, got 1"),
    ("steps: {1: {}}\n", "steps: unknown step 1"),
    ("launch: [1]\n", "launch: must be a mapping, got list"),
    ("launch: {num_processes: [1]}\n", "launch.num_processes: must be an integer from 1 to 4096, got [1]"),
    ("launch: {num_processes: 10000000000}\n", "launch.num_processes: must be an integer from 1 to 4096"),
    ("launch: {num_processes: true}\n", "launch.num_processes:"),
    ("launch: {num_processes_per_step: [1]}\n", "launch.num_processes_per_step: must be a mapping STEP"),
    ("launch: {num_processes_per_step: {policy: 2}}\n", "launch.num_processes_per_step:"),
    ("launch: {vllm_server: [1]}\n", "launch.vllm_server: must be a mapping with gpus (required)"),
    ("model: m\nlaunch: {vllm_server: {}}\n", "launch.vllm_server: must be a mapping with gpus (required)"),
    ("model: m\nlaunch: {vllm_server: {gpus: '6', port: 70000}}\n", "launch.vllm_server:"),
    ("model: m\nlaunch: {vllm_server: {gpus: 'a,b'}}\n", "launch.vllm_server:"),
    ("launch: {vllm_server: {gpus: '6,7'}}\n", "model: required with launch.vllm_server"),
    ("launch: {gpu_memory_gib: x}\n", "launch.gpu_memory_gib: must be a number of GiB in (0, 4096], got 'x'"),
    ("launch: {gpu_memory_gib: .nan}\n", "launch.gpu_memory_gib:"),
    ("launch: {train_gpus: [0, 1]}\n", "launch.train_gpus: must be a GPU list"),
    ("launch: {accelerate_config: 3}\n", "launch.accelerate_config: must be a path"),
    ("launch: {\"\\u202e\": 1}\n", "launch: unknown key '\\u202e'"),
    ("model: [1]\n", "model: must be a model name or path, got [1]"),
    ("model: ''\n", "model: must be a model name or path"),
    ("model: 2020-01-01\n", "model: must be a model name or path, got datetime.date"),
    ("modle: x\n", "unknown key(s) modle (known"),
])
def test_a_wrong_shape_is_one_line_naming_the_field(tmp_path, text, fragment):
    refused(tmp_path, text, fragment)


def test_the_shipped_scales_still_load():
    assert [load_scale(n).model for n in ("demo", "small", "gpu", "full")] == \
        ["embedded", "embedded", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B"]
    assert load_scale("full").launch["vllm_server"]["gpus"] == "6,7"


@pytest.mark.parametrize("command", [["plan", "--scale"], ["demo", "--scale"],
                                     ["launch", "grpo", "--dry-run", "--scale"]])
@pytest.mark.parametrize("text,fragment", [
    ("model: a\nmodel: b\n", "repeated key 'model'"),
    ("steps: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
    (BOMB.replace("a: &a", "model: &a", 1), "anchors and aliases"),
    ("launch: [1]\n", "launch: must be a mapping"),
    ("model: m\nlaunch: {vllm_server: [1]}\n", "launch.vllm_server:"),
    ("launch: {vllm_server: {gpus: '6,7'}}\n", "model: required"),
])
def test_the_cli_answers_a_bad_scale_with_one_line_and_exit_2(command, text, fragment, tmp_path, capsys):
    code = None
    try:
        code = cli.main([*command, scale(tmp_path, text), "--workspace", str(tmp_path / "ws")])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------- numbers
def _int_fields(cls):
    hints = typing.get_type_hints(cls)
    for name in cls.names():
        hint = hints[name]
        if hint is int or (typing.get_origin(hint) in (typing.Union, __import__("types").UnionType)
                           and int in typing.get_args(hint)):
            yield name


CONFIGS = sorted({(name, step.config) for name, step in STEPS.items()}, key=lambda x: x[0])


@pytest.mark.parametrize("step,cls", CONFIGS, ids=[s for s, _ in CONFIGS])
def test_every_integer_parameter_of_every_step_has_an_upper_bound(step, cls):
    fields = list(_int_fields(cls))
    assert fields or step == "review", step  # review's config has no numbers
    for name in fields:
        bound = UPPER_BOUNDS.get(name, (MAX_SEED if name.endswith("seed") else MAX_INT,))[0]
        for value in (bound + 1, 10**30):
            with pytest.raises(ValueError) as info:
                cls.from_dict({name: value})
            message = str(info.value)
            assert f"parameter {name}: must be at most {bound}" in message and "\n" not in message, message


def test_nested_config_integers_are_bounded_by_their_dotted_name():
    with pytest.raises(ParameterError, match=r"rm\.max_length: must be at most 262144"):
        STEPS["reward"].config.from_dict({"rm.max_length": 10**9})
    with pytest.raises(ParameterError, match=r"rm\.seed: must be at most 4294967295"):
        STEPS["reward"].config.from_dict({"rm": {"seed": 2**40}})


@pytest.mark.parametrize("name,value,shown", [
    ("num_perm", 1_000_000, "1000000"),
    ("max_chars", 10**20, "1e+20"),
    ("max_chars", "10**5000", "an integer of 16610 bits"),
    ("concurrency", 100_000, "100000"),
    ("max_new_tokens", 10**9, "1000000000"),
    ("embed_batch_size", 10**7, "10000000"),
    ("label_chunk", 10**7, "10000000"),
    ("bench_size", 10**12, "1000000000000"),
    ("seed", 2**40, "1099511627776"),
])
def test_the_corpus_config_bounds_sizes_and_counts(name, value, shown):
    value = 10**5000 if value == "10**5000" else value  # (an id pytest can print)
    with pytest.raises(ValueError) as info:
        DataConfig(**{name: value})
    assert str(info.value).startswith(f"parameter {name}: must be at most") and str(info.value).endswith(shown)
    DataConfig(**{name: UPPER_BOUNDS.get(name, (MAX_SEED if name == "seed" else MAX_INT,))[0]})  # the bound: fine


def test_notebook_parameters_and_sources_share_the_bounds():
    problems = params_problems({"num_perm": 10**6, "max_new_tokens": 7, "seed": 2**33}, {"num_perm": int,
                               "max_new_tokens": int, "seed": int}, "notebook 00")
    assert problems == [f"parameter num_perm: {bound_problem('num_perm', 10**6)}",
                        f"parameter seed: {bound_problem('seed', 2**33)}"]
    from promedical.models.sources import Source

    for key, value in (("concurrency", 10**6), ("max_new_tokens", 10**9)):
        with pytest.raises(ValueError, match=f"{key} must be at most"):
            Source(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", **{key: value})


@pytest.mark.parametrize("argv,fragment", [
    (["ingest", "x.jsonl", "--max-chars", "100000000000000000000"], "parameter max_chars: must be at most 1000000"),
    (["curate", "-p", "num_perm=1000000"], "parameter num_perm: must be at most 4096"),
    (["step", "data", "-p", "num_perm=1000000"], "parameter num_perm: must be at most 4096"),
    (["step", "grpo", "-p", "group_size=100000"], "parameter group_size: must be at most 1024"),
    (["step", "generate", "-p", "max_new_tokens=1000000000"], "parameter max_new_tokens: must be at most"),
    (["notebook", "01", "-p", "seed=99999999999"], "parameter seed: must be at most 4294967295"),
])
def test_the_cli_refuses_an_unbounded_number_in_one_line(argv, fragment, tmp_path, capsys, monkeypatch):
    from dataclasses import replace

    import promedical.app.notebooks

    def never(*_, **__):
        pytest.fail("an unbounded number reached the work itself")

    monkeypatch.setattr(promedical.app.notebooks, "run_notebook", never)
    for name, step in STEPS.items():
        monkeypatch.setitem(STEPS, name, replace(step, run=never))
    try:
        code = cli.main([*argv, "--workspace", str(tmp_path)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2) and len(err.splitlines()) == 1 and fragment in err, err


# ---------------------------------------------------------------------------------------------- score
GRADED = {"p1": True, "p2": False, "p3": True, "b1": True, "v1": False}


def run_score(tmp_path, capsys, *grades):
    rubrics = tmp_path / "rubrics.jsonl"
    rubrics.write_text(json.dumps(make_rubric("r1")) + "\n")
    path = tmp_path / "grades.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in grades))
    code = cli.main(["score", str(rubrics), str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("missing,tiers", [
    (["p2"], "proficiency"), (["b1"], "bonus"), (["v1"], "veto"), (["p1", "p2", "p3"], "proficiency"),
    (["p3", "b1"], "proficiency/bonus"), (["p1", "p2", "p3", "b1", "v1"], "proficiency/bonus/veto"),
])
def test_a_missing_grade_is_unknown_and_nothing_is_scored(tmp_path, capsys, missing, tiers):
    partial = {k: v for k, v in GRADED.items() if k not in missing}
    code, out, err = run_score(tmp_path, capsys, {"prompt_id": "r1", "response_id": "a", "criteria_met": GRADED},
                               {"prompt_id": "r1", "response_id": "b", "criteria_met": partial})
    assert code == 1 and out == ""  # not even the complete response is printed: one rule, no partial output
    (line,) = err.splitlines()
    assert ":2: criteria_met: response 'b' of rubric 'r1' has no grade for " + tiers + " criteria " in line
    assert all(f"'{c}'" in line for c in missing) and "unknown is not 'not met'" in line


def test_a_null_grade_is_refused_not_read_as_not_met(tmp_path, capsys):
    code, out, err = run_score(tmp_path, capsys, {"prompt_id": "r1", "response_id": "a",
                                                  "criteria_met": dict(GRADED, p2=None)})
    assert code == 1 and out == "" and "criteria_met: must be an object" in err


def test_a_fully_graded_response_is_scored(tmp_path, capsys):
    code, out, err = run_score(tmp_path, capsys, {"prompt_id": "r1", "response_id": "a", "criteria_met": GRADED})
    assert code == 0 and err == ""
    assert json.loads(out) == {"prompt_id": "r1", "response_id": "a", "s1": 0.7, "s2": 1, "s3": 0,
                               "reward": pytest.approx(0.95)}


def test_score_help_says_a_missing_grade_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a missing proficiency, bonus or veto grade is unknown, never 'not met'" in text


# ---------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("field,value", [
    ("response_id", "r1 "), ("response_id", " r1"), ("response_id", "r1\u200b"), ("response_id", "r\u04301"),
    ("response_id", "r1\n"), ("response_id", "ｒ1"), ("response_id", ""), ("response_id", 7),
    ("prompt_id", "r1\u202e"), ("prompt_id", "r1\t"),
])
def test_imported_labels_apply_the_id_rule(tmp_path, field, value):
    path = tmp_path / "labels.jsonl"
    good = {"prompt_id": "r1", "response_id": "r1", "criteria_met": {"p1": True}}
    path.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, **{field: value})) + "\n")
    with pytest.raises(LabelError) as info:
        load_labels(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}:2: {field}: ") and ("invalid id" in line or "missing or empty" in line), line
    assert "\n" not in line and "\u200b" not in line and "\u202e" not in line


@pytest.mark.parametrize("cid", ["p1 ", "p1\u200b", "p\u04301", ""])
def test_imported_label_criterion_ids_apply_the_id_rule_without_rubrics(tmp_path, cid):
    path = tmp_path / "labels.jsonl"
    met = {"p1": True, cid: False}
    path.write_text(json.dumps({"prompt_id": "r1", "response_id": "a", "criteria_met": met}) + "\n")
    with pytest.raises(LabelError, match=r":1: criteria_met: criterion "):
        load_labels(path)


def test_valid_labels_still_load(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"prompt_id": "r1", "response_id": "model-a:r1#2", "criteria_met": {"p1": True,
                                                                                                  "p2": None}}) + "\n")
    assert load_labels(path) == {("r1", "model-a:r1#2"): {"p1": True}}
