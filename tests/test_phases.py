"""Phase reuse records (promedical/core/phases.py): same inputs and config -> reused; anything changed,
a missing artefact or force -> run again; a copied workspace reuses its own artefacts."""
import shutil
from dataclasses import dataclass

from promedical.core.phases import Phase, fingerprint
from promedical.core.workspace import Workspace


@dataclass
class Settings:
    n: int = 3
    name: str = "x"


def run(ws, inputs, config, calls, **kw):
    phase = Phase(ws, "demo.phase", inputs=inputs, config=config, **kw)
    if phase.reusable():
        return "reused"
    calls.append(1)
    out = Workspace.of(ws).root / "out.txt"
    out.write_text(repr(inputs))
    phase.done(out)
    return "ran"


def test_same_inputs_and_config_reuse_and_say_so(tmp_path, capsys):
    calls = []
    assert run(tmp_path, [{"id": "a"}], Settings(), calls) == "ran"
    assert run(tmp_path, [{"id": "a"}], Settings(), calls) == "reused"
    said = capsys.readouterr().out
    assert "demo.phase: inputs and config unchanged" in said and "out.txt" in said
    assert calls == [1]


def test_a_change_anywhere_runs_again(tmp_path):
    calls = []
    run(tmp_path, [{"id": "a"}], Settings(), calls)
    assert run(tmp_path, [{"id": "a"}], Settings(n=4), calls) == "ran"          # a config field
    assert run(tmp_path, [{"id": "b"}], Settings(n=4), calls) == "ran"          # an input value
    assert run(tmp_path, [{"id": "b"}], Settings(n=4), calls, force=True) == "ran"
    (tmp_path / "out.txt").unlink()
    assert run(tmp_path, [{"id": "b"}], Settings(n=4), calls) == "ran"          # the artefact is gone
    assert len(calls) == 5


def test_a_file_input_is_keyed_by_its_content(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text('{"a": 1}\n')
    before = fingerprint(f)
    f.write_text('{"a": 2}\n')
    assert fingerprint(f) != before
    g = tmp_path / "copy.jsonl"
    g.write_text('{"a": 2}\n')
    assert fingerprint(g) == fingerprint(f)  # the same content, wherever it lies


def test_a_copied_workspace_reuses_its_own_artefacts(tmp_path, capsys):
    calls = []
    run(tmp_path / "a", ["x"], Settings(), calls)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "a" / "out.txt").unlink()  # the original's artefact is gone; the copy's is what counts
    assert run(tmp_path / "b", ["x"], Settings(), calls) == "reused"
    assert calls == [1]
