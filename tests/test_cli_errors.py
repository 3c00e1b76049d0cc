"""Every subcommand walked with bad arguments: exit 1 or 2, one line on stderr naming the problem,
no traceback. Runs in-process (cli.main) and never runs a step, a notebook or a model: those entry
points are replaced by a failure, so a bad argument that slipped through validation fails the test
instead of starting work."""
import json
import os
import re
from dataclasses import replace

import pytest
from conftest import make_rubric

from promedical.app import cli
from promedical.steps import STEPS

HB_ROW = {"prompt": [{"role": "user", "content": "Chest pain, left arm numb."}], "prompt_id": "hb1",
          "rubrics": [{"criterion": "Says to call emergency services.", "points": 10, "tags": ["axis:accuracy"]},
                      {"criterion": "Suggests waiting.", "points": -5, "tags": []}]}
GRADE = {"prompt_id": "r1", "response_id": "x", "criteria_met": {"p1": True, "p2": False, "p3": True, "b1": True, "v1": False}}


def _lines(*objs):
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


@pytest.fixture
def files(tmp_path):
    """The inputs the walk refers to as {name}."""
    dup_tier = json.dumps(make_rubric("r1")).replace('"tier": "veto"', '"tier": "veto", "tier": "bonus"')
    contents = {
        "rubrics": _lines(make_rubric("r1")),
        "grades": _lines(GRADE),
        "dup_grades": _lines(GRADE, GRADE),
        "dup_key_grade": _lines(json.dumps(GRADE).replace('"p1": true', '"p1": true, "p1": false')),
        "newline_id_grade": _lines(dict(GRADE, prompt_id="r1\nforged: line")),
        "unknown_prompt": _lines(dict(GRADE, prompt_id="zz")),
        "dup_tier": _lines(dup_tier),
        "bidi_id": _lines(make_rubric("r\u202e1")),
        "zero_width_cid": _lines(make_rubric("r1", criteria=[dict(c, id=c["id"] + "\u200b") if c["id"] == "b1" else c
                                                           for c in make_rubric("r1")["criteria"]])),
        "nan": '{"id": NaN}\n',
        "not_utf8": "",
        "empty": "",
        "hb": _lines(HB_ROW),
        "hb_grades_dup": _lines({"prompt_id": "hb1", "criteria_met": [True, False]},
                                {"prompt_id": "hb1", "criteria_met": [True, True]}),
        "hb_grades_short": _lines({"prompt_id": "hb1", "criteria_met": [True]}),
        "hb_overflow": _lines(dict(HB_ROW, rubrics=[dict(HB_ROW["rubrics"][0], points=1e308), HB_ROW["rubrics"][0]])),
        "bad_yaml": "steps: [unclosed\n",
        "zero_processes_yaml": "model: embedded\nsteps: {}\nlaunch: {num_processes: 0}\n",
        "negative_gpu_yaml": "model: embedded\nsteps: {}\nlaunch: {gpu_memory_gib: -80}\n",
        "bad_params_yaml": "model: embedded\nsteps: {grpo: {group_size: -8}}\n",
        "old_shape_yaml": "model: embedded\nsteps: [{notebook: '04', parameters: {steps: 2}}]\n",
        "unknown_step_yaml": "model: embedded\nsteps: {policy: {steps: 2}}\n",
        "dup_key_yaml": "model: embedded\nsteps: {}\nmodel: other\n",
        "deep_yaml": "steps: " + "[" * 5000 + "]" * 5000 + "\n",
        "alias_yaml": "model: &m embedded\nsteps: {grpo: {model: *m}}\n",
        "launch_list_yaml": "model: embedded\nlaunch: [1]\n",
        "vllm_list_yaml": "model: embedded\nlaunch: {vllm_server: [1]}\n",
        "no_model_yaml": "launch: {vllm_server: {gpus: '6,7'}}\n",
        "steps_list_yaml": "steps: [1]\n",
        "missing_proficiency": _lines(dict(GRADE, criteria_met={k: v for k, v in GRADE["criteria_met"].items() if k != "p2"})),
        "missing_bonus": _lines(dict(GRADE, criteria_met={k: v for k, v in GRADE["criteria_met"].items() if k != "b1"})),
    }
    paths = {}
    for name, text in contents.items():
        path = tmp_path / (f"{name}.yaml" if name.endswith("yaml") else f"{name}.jsonl")
        path.write_text(text, encoding="utf-8")
        paths[name] = str(path)
    (tmp_path / "not_utf8.jsonl").write_bytes(b'{"id": "\xff"}\n')
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    paths.update(fifo=str(tmp_path / "fifo"), dir=str(tmp_path / "adir"), missing=str(tmp_path / "missing.jsonl"),
                 under_file=str(tmp_path / "afile" / "out.jsonl"))
    return paths


# (argv with {name} placeholders, a fragment the one stderr line must contain)
CASES = [
    ([], "required: command"),
    (["frobnicate"], "invalid choice"),
    (["validate"], "required: files"),
    (["validate", "{missing}"], "cannot read"),
    (["validate", "{dir}"], "cannot read"),
    (["validate", "{empty}"], "file is empty"),
    (["validate", "{nan}"], "NaN is not valid JSON"),
    (["validate", "{not_utf8}"], "not valid UTF-8"),
    (["validate", "{dup_tier}"], ":1: <line>: malformed JSON: duplicate key 'tier'"),
    (["validate", "{bidi_id}"], "invalid id 'r\\u202e1'"),
    (["validate", "{zero_width_cid}"], "criteria[3].id: invalid id 'b1\\u200b'"),
    (["validate", "{hb_overflow}"], "rubrics[0].points: must be a non-zero finite number"),
    (["score", "{rubrics}"], "required: grades"),
    (["score", "{rubrics}", "{grades}", "--alpha", "x"], "argument --alpha: must be a number"),
    (["score", "{rubrics}", "{grades}", "--lam", "nan"], "must be a finite number"),
    (["score", "{rubrics}", "{grades}", "--lam=-inf"], "must be a finite number"),
    (["score", "{rubrics}", "{grades}", "--lam", "1e300"], "lam must be at most"),
    (["score", "{rubrics}", "{grades}", "--alpha", "1"], "alpha must satisfy"),
    (["score", "{missing}", "{grades}"], "cannot read"),
    (["score", "{rubrics}", "{missing}"], "cannot read"),
    (["score", "{hb}", "{grades}"], "this is HealthBench data"),
    (["score", "{rubrics}", "{dup_grades}"], ":2: response_id: duplicate grades for response 'x'"),
    (["score", "{rubrics}", "{dup_key_grade}"], ":1: <line>: malformed JSON: duplicate key 'p1'"),
    (["score", "{rubrics}", "{newline_id_grade}"], "prompt_id: invalid id 'r1\\nforged: line'"),
    (["score", "{rubrics}", "{unknown_prompt}"], "no rubric 'zz'"),
    (["healthbench"], "required: hb"),
    (["healthbench", "score", "{hb}", "{hb_grades_dup}"], ":2: prompt_id: duplicate grades for 'hb1' (first on line 1)"),
    (["healthbench", "score", "{hb}", "{hb_grades_short}"], "1 grades for 2 criteria"),
    (["healthbench", "score", "{hb_overflow}", "{hb_grades_short}"], "|points| <="),
    (["healthbench", "score", "{rubrics}", "{grades}"], "not HealthBench data"),
    (["healthbench", "import", "{hb}", "{dir}"], "is a directory"),
    (["healthbench", "import", "{hb}", "{fifo}"], "not a regular file"),
    (["healthbench", "import", "{hb}", "{under_file}"], "cannot create its folder"),
    (["healthbench", "import", "{missing}", "{dir}/x.jsonl"], "cannot read"),
    (["healthbench", "export", "{hb}", "{dir}/x.jsonl"], "this is HealthBench data"),
    (["healthbench", "export", "{rubrics}", "{fifo}"], "not a regular file"),
    (["demo", "--scale", "nope"], "no scale config"),
    (["demo", "--scale", "{bad_yaml}"], "malformed YAML"),
    (["notebook"], "required: name"),
    (["notebook", "0"], "notebooks; give a unique prefix"),
    (["notebook", "zz"], "matches 0 notebooks"),
    (["notebook", "0*"], "matches 0 notebooks"),
    (["notebook", "../notebooks/01"], "matches 0 notebooks"),
    (["notebook", "01", "-p", "foo=1"], "parameter 'foo': unknown for notebook 01_rubric_generation"),
    (["notebook", "01", "-p", "seed=x"], "parameter seed: must be an integer, got str"),
    (["notebook", "01", "-p", "seed=-1"], "parameter seed: must not be negative"),
    (["notebook", "01", "-p", "constrained=1"], "parameter constrained: must be true or false"),
    (["notebook", "01", "-p", "seed"], "-p expects KEY=VALUE"),
    (["notebook", "01", "-p", "workspace=x"], "give the workspace as --workspace"),
    (["notebook", "02", "-p", "reviews_file=\"{missing}\""], "parameter reviews_file: no such file"),
    (["step", "nope"], "invalid choice"),
    (["step", "generate", "-p", "nope=1"], "parameter 'nope': unknown for step generate"),
    (["step", "generate", "-p", "n_instructions=three"], "must be an integer, got str"),
    (["step", "generate", "-p", "n_instructions=NaN"], "must be an integer, got str"),
    (["step", "generate", "-p", "n_instructions=1", "-p", "n_instructions=2"], "given twice"),
    (["step", "generate", "--params", "{"], "--params: malformed JSON"),
    (["step", "generate", "--params", "[1]"], "--params: must be a JSON object"),
    (["step", "generate", "--params", '{"seed": 1, "seed": 2}'], "duplicate key 'seed'"),
    (["step", "reward", "-p", "temperatures=[0.7, -1]"], "parameter temperatures: item 1 must not be negative"),
    (["step", "review", "-p", "reviews_file={missing}"], "parameter reviews_file: no such file"),
    (["step", "benchmark", "-p", "reward_adapter={missing}"], "no adapter directory"),
    (["step", "grpo", "-p", "group_size=2.5"], "parameter group_size: must be an integer, got float"),
    (["step", "grpo", "-p", "lam=1e999"], "must be a number, got str"),
    (["step", "rm-train", "-p", "lr=-1"], "parameter lr: must not be negative"),
    (["step", "generate", "--workspace", "{rubrics}"], "is not a folder"),
    (["step", "generate", "--workspace", "{rubrics}/deeper"], "is not a folder"),
    (["notebook", "01", "--workspace", "{rubrics}"], "is not a folder"),
    (["demo", "--workspace", "{rubrics}"], "is not a folder"),
    (["launch", "grpo", "--dry-run", "--workspace", "{rubrics}"], "is not a folder"),
    (["validate", "/dev/zero"], "cannot read: not a regular file or a pipe"),
    (["score", "{rubrics}", "/dev/null"], "cannot read: not a regular file or a pipe"),
    (["launch", "grpo", "--scale", "nope"], "no scale config"),
    (["launch", "grpo", "--num-processes", "0"], "--num-processes: must be an integer >= 1, got 0"),
    (["launch", "grpo", "--num-processes", "-1", "--dry-run"], "must be an integer >= 1, got -1"),
    (["launch", "grpo", "--num-processes", "two"], "must be an integer >= 1, got 'two'"),
    (["launch", "rm-train", "--dry-run", "-p", "batch_size=big"], "parameter batch_size: must be an integer"),
    (["launch", "grpo", "--dry-run", "--params", "{}{}"], "--params: malformed JSON"),
    (["plan", "--num-processes", "0"], "must be an integer >= 1, got 0"),
    (["plan", "--num-processes", "-1"], "must be an integer >= 1, got -1"),
    (["plan", "--scale", "nope"], "no scale config"),
    (["plan", "--scale", "{bad_yaml}"], "malformed YAML"),
    (["plan", "--scale", "{zero_processes_yaml}"], "launch.num_processes: must be an integer from 1 to 4096, got 0"),
    (["plan", "--scale", "{negative_gpu_yaml}"], "launch.gpu_memory_gib: must be a number of GiB in (0, 4096], got -80"),
    (["plan", "--scale", "{dup_key_yaml}"], "line 3: repeated key 'model'"),
    (["demo", "--scale", "{dup_key_yaml}"], "line 3: repeated key 'model'"),
    (["plan", "--scale", "{deep_yaml}"], "nested deeper than 32 levels"),
    (["demo", "--scale", "{alias_yaml}"], "anchors and aliases (&name, *name) are not allowed"),
    (["plan", "--scale", "{launch_list_yaml}"], "launch: must be a mapping, got list"),
    (["plan", "--scale", "{vllm_list_yaml}"], "launch.vllm_server: must be a mapping with gpus (required)"),
    (["plan", "--scale", "{no_model_yaml}"], "model: required with launch.vllm_server"),
    (["demo", "--scale", "{steps_list_yaml}"], "steps: must map a step name to its parameters"),
    (["score", "{rubrics}", "{missing_proficiency}"], "has no grade for proficiency criteria 'p2'"),
    (["score", "{rubrics}", "{missing_bonus}"], "has no grade for bonus criteria 'b1'"),
    (["step", "data", "-p", "num_perm=1000000"], "parameter num_perm: must be at most 4096"),
    (["ingest", "x.jsonl", "--max-chars", "100000000000000000000"], "parameter max_chars: must be at most"),
    (["plan", "--scale", "{bad_params_yaml}"], "parameter group_size: must not be negative"),
    (["launch", "grpo", "--dry-run", "--scale", "{bad_params_yaml}"], "parameter group_size: must not be negative"),
    (["demo", "--scale", "{bad_params_yaml}"], "parameter group_size: must not be negative"),
    (["plan", "--scale", "{old_shape_yaml}"], "steps: must map a step name to its parameters"),
    (["launch", "grpo", "--scale", "{unknown_step_yaml}"], "steps: unknown step 'policy'"),
    (["step", "data", "-p", "bench_fraction=2"], "parameter bench_fraction: must be a number in [0, 1)"),
    (["step", "reward", "-p", "rm.max_steps=0"], "rm.max_steps"),
    (["ingest", "x.jsonl", "--workspace", "{rubrics}"], "is not a folder"),
]


def _never(*_, **__):
    pytest.fail("a bad argument reached the work itself")


@pytest.mark.parametrize("argv,fragment", CASES, ids=[" ".join(a) or "<none>" for a, _ in CASES])
def test_bad_arguments_give_one_line_and_exit_1_or_2(argv, fragment, files, capsys, monkeypatch):
    import promedical.app.demo
    import promedical.app.notebooks
    import promedical.scale.launch

    for module, name in ((promedical.scale.launch, "launch"), (promedical.app.notebooks, "run_notebook"),
                         (promedical.app.demo, "run_demo")):
        monkeypatch.setattr(module, name, _never)
    for name, step in STEPS.items():
        monkeypatch.setitem(STEPS, name, replace(step, run=_never))
    args = [re.sub(r"\{(\w+)\}", lambda m: files.get(m.group(1), m.group(0)), a) for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert code in (1, 2), (code, out.err)
    assert len(lines) == 1 and lines[0].strip(), out.err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in out.err + out.out
    if "{fifo}" in argv:
        assert os.path.exists(files["fifo"]) and not os.path.isfile(files["fifo"])  # left as it was


def test_an_unexpected_error_is_one_line_unless_a_traceback_is_asked_for(capsys, monkeypatch, tmp_path):
    def boom(*_, **__):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setitem(STEPS, "review", replace(STEPS["review"], run=boom))
    monkeypatch.delenv("PROMEDICAL_TRACEBACK", raising=False)
    argv = ["step", "review", "--workspace", str(tmp_path)]
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == "promedical step: error: something broke\n"
    monkeypatch.setenv("PROMEDICAL_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(argv)
