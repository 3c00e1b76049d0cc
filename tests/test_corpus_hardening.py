"""Step 00 under hostile use (issue 23, sections 3 and 4): one writer at a time, empty CLI values refused,
a killed curation or ingest that leaves nothing inconsistent or stale, inputs checked first, one strict
JSON rule, bounded CSV records, verified Parquet checksums, and ids derived from any file name or row."""
import csv
import io
import json
import random
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, make_rubric

from promedical.app.cli import main
from promedical.core.ids import id_problem
from promedical.core.rubric import rubric_problems
from promedical.corpus import store
from promedical.corpus.config import DataConfig
from promedical.corpus.funnel import explain, export
from promedical.corpus.ingest import id_part, ingest
from promedical.corpus.readers import _csv_records, iter_file
from promedical.corpus.step import curate
from promedical.corpus.store import CurationError, WorkspaceBusy, instruction_rubrics, read_instructions, writer_lock

SHAREGPT = str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl")
MEDQA = str(ROOT / "data" / "samples" / "medqa_sample.csv")
FAST = dict(semantic_dedup=False, difficulty=False, classify=False, decontam_embeddings=False)
FAST_P = [a for k, v in FAST.items() for a in ("-p", f"{k}={str(v).lower()}")]


def _run(argv):
    """The CLI in this process: (exit code, stdout, stderr)."""
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "promedical", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env)


def _rows(path: Path, n: int, tag: str) -> str:
    path.write_text("".join(json.dumps({"id": f"{tag}-{i}", "prompt": f"Question {i} from {tag}: is symptom "
                                        f"{i * 7919 % 100003} of {tag} serious?"}) + "\n" for i in range(n)))
    return str(path)


def _curated(ws):
    ingest([SHAREGPT, MEDQA], ws)
    curate(ws, DataConfig(**FAST), progress=False)


# ----------------------------------------------------------------------------------------------
# 1. one writer at a time: nothing lost
# ----------------------------------------------------------------------------------------------
@pytest.mark.subprocess
def test_two_ingests_and_a_curate_at_once_lose_nothing(tmp_path):
    ws = tmp_path / "ws"
    a, b = _rows(tmp_path / "a.jsonl", 4000, "a"), _rows(tmp_path / "b.jsonl", 4000, "b")
    assert _cli("ingest", SHAREGPT, "--workspace", str(ws)).returncode == 0
    procs = [subprocess.Popen([sys.executable, "-m", "promedical", *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args in (("ingest", a, "--workspace", str(ws)), ("ingest", b, "--workspace", str(ws)),
                          ("curate", "--workspace", str(ws), "--quiet", *FAST_P))]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:  # each writer succeeds, or stops in one line without writing
        assert code == 0 or (code == 1 and "busy" in err and len(err.strip().splitlines()) == 1), (code, err)
    ids = set(pq.read_table(ws / "data" / "instructions.parquet")["id"].to_pylist())
    for (code, _, _), tag in zip(results[:2], ("a", "b")):
        if code == 0:
            assert {f"{tag}:{tag}-{i}" for i in range(4000)} <= ids
    assert all(code == 0 for code, _, _ in results[:2])  # 30 s of patience is far more than these need
    log = json.loads((ws / "data" / "sources.json").read_text())
    assert sorted(s["source"] for s in log) == sorted([SHAREGPT, a, b])
    assert store.check_curation(ws) is not None  # the curation that ran is whole


def test_a_second_writer_waits_then_stops_in_one_line_writing_nothing(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    with writer_lock(ws):  # another writer (its own open file: flock excludes it as it would a process)
        with pytest.raises(WorkspaceBusy, match="busy: another ingest or curate is writing this workspace"):
            ingest([SHAREGPT], ws)
        with pytest.raises(WorkspaceBusy):
            curate(ws, DataConfig(**FAST), progress=False)
        code, out, err = _run(["ingest", SHAREGPT, "--workspace", str(ws)])
        assert code == 1 and len(err.strip().splitlines()) == 1 and "busy" in err
        code, out, err = _run(["curate", "--workspace", str(ws), *FAST_P])
        assert code == 1 and len(err.strip().splitlines()) == 1 and "busy" in err
    assert not (ws / "data" / "instructions.parquet").exists()
    # a writer that waits less than the other holds the lock: threads, one after the other, nothing lost
    monkeypatch.setattr(store, "LOCK_WAIT_S", 60)
    errors = []

    def run(spec):
        try:
            ingest([spec], ws)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (SHAREGPT, MEDQA)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(pq.read_table(ws / "data" / "instructions.parquet")) == 14


# ----------------------------------------------------------------------------------------------
# 2. empty or missing CLI values: usage errors, nothing runs
# ----------------------------------------------------------------------------------------------
EMPTY_CASES = [
    ("ingest", "", "--workspace", "{ws}"),
    ("ingest", "   ", "--workspace", "{ws}"),
    ("ingest", SHAREGPT, "--workspace", ""),
    ("ingest", SHAREGPT, "--workspace", " "),
    ("ingest", SHAREGPT, "--workspace", "{ws}", "--columns", ""),
    ("ingest", SHAREGPT, "--workspace", "{ws}", "--columns", "prompt="),
    ("ingest", SHAREGPT, "--workspace", "{ws}", "--columns", "=text"),
    ("ingest", SHAREGPT, "--workspace", "{ws}", "--max-chars", ""),
    ("ingest", SHAREGPT, "--workspace", "{ws}", "--max-chars"),
    ("curate", "--workspace", "{ws}", "--explain", ""),
    ("curate", "--workspace", "{ws}", "--explain", "  "),
    ("curate", "--workspace", "{ws}", "--explain"),
    ("curate", "--workspace", "{ws}", "--export", ""),
    ("curate", "--workspace", "{ws}", "--export"),
    ("curate", "--workspace", "{ws}", "--decontaminate", ""),
    ("curate", "--workspace", "{ws}", "-p", ""),
    ("curate", "--workspace", "{ws}", "-p", "seed="),
    ("curate", "--workspace", "{ws}", "-p", "taxonomy= "),
    ("curate", "--workspace", "{ws}", "-p", "=3"),
    ("curate", "--workspace", ""),
    ("curate", "--workspace", "{ws}", "--explain", "x", "--export", "{ws}/o.jsonl"),
]


def test_empty_or_missing_values_are_usage_errors_and_nothing_runs(tmp_path):
    ws = tmp_path / "ws"
    _curated(ws)
    d = ws / "data"
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    for case in EMPTY_CASES:
        argv = [a.replace("{ws}", str(ws)) for a in case]
        code, out, err = _run(argv)
        assert code == 2, (case, code, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out, (case, err)
        assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before, case  # nothing ran
    assert not (ws / "o.jsonl").exists()


# ----------------------------------------------------------------------------------------------
# 3. killed mid-way: one curation is one unit; no stale temporary copies
# ----------------------------------------------------------------------------------------------
KILL_AFTER = """
import os, signal, sys
real = os.replace
def replace(src, dst, *a, **k):
    name = os.path.basename(str(dst))
    if name == sys.argv[1] and sys.argv[2] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *a, **k)
    if name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from promedical.app.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _killed(name, when, *args):
    out = subprocess.run([sys.executable, "-c", KILL_AFTER, name, when, *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == -9, out.stderr[-2000:]


def _explain_and_export(ws, tmp_path):
    """(explain's split per id, export's split per id), or the one-line refusals of both."""
    code, out, err = _run(["curate", "--workspace", str(ws), "--export", str(tmp_path / "out.jsonl")])
    if code:
        return None, err
    exported = {json.loads(x)["id"]: json.loads(x)["split"] for x in (tmp_path / "out.jsonl").read_text().splitlines()}
    explained = {}
    for rid in pq.read_table(ws / "data" / "curated.parquet")["id"].to_pylist():
        code, line, err = _run(["curate", "--workspace", str(ws), "--explain", rid])
        assert code == 0, err
        if ": kept in " in line:
            explained[rid] = line.split(": kept in ")[1].split()[0]
    return explained, exported


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["curated.parquet", "train.parquet", "bench.parquet", "split_audit.json",
                                  "README.md", "funnel.json"])
def test_a_curation_killed_at_any_write_is_refused_or_whole(tmp_path, name):
    ws = tmp_path / "ws"
    _curated(ws)  # seed 0, bench 20%
    _killed(name, "after", "curate", "--workspace", str(ws), "--quiet", *FAST_P, "-p", "seed=5", "-p", "bench_fraction=0.5")
    explained, exported = _explain_and_export(ws, tmp_path)
    if name == "funnel.json":  # the last write: the new curation is whole, and both readers agree on it
        assert explained == exported and len(exported) == 9 and sum(s == "bench" for s in exported.values()) >= 4
    else:  # a mix of two curations: every reader refuses it in one line, naming the way out
        assert explained is None and "the last curation was interrupted" in exported
        assert len(exported.strip().splitlines()) == 1
        for rid in ("sharegpt_sample:sg-001", "medqa_sample:mq-008"):
            code, _, err = _run(["curate", "--workspace", str(ws), "--explain", rid])
            assert code == 1 and "interrupted" in err
        with pytest.raises(CurationError):
            read_instructions(ws, "train")
    # curating again mends it, and leaves no temporary file behind
    curate(ws, DataConfig(**FAST), progress=False)
    explained, exported = _explain_and_export(ws, tmp_path)
    assert explained == exported and len(exported) == 9
    assert not [p for p in (ws / "data").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.subprocess
def test_killed_writers_leave_no_stale_temporary_copies(tmp_path):
    ws = tmp_path / "ws"
    big = _rows(tmp_path / "big.jsonl", 3000, "big")
    # killed just before the new table is renamed into place: a full-size temporary copy is left
    _killed("instructions.parquet", "before", "ingest", big, "--workspace", str(ws))
    temps = [p for p in (ws / "data").iterdir() if p.name.startswith(".instructions.parquet.")]
    assert len(temps) == 1 and temps[0].stat().st_size > 100_000
    assert not (ws / "data" / "instructions.parquet").exists()
    # the next writer removes it, and ingests everything
    assert ingest([big], ws)["added"] == 3000
    assert not [p for p in (ws / "data").iterdir() if p.name.endswith(".tmp")]
    # the same for a curation killed before its first table is in place, and the old outputs stay whole
    curate(ws, DataConfig(**FAST), progress=False)
    _killed("curated.parquet", "before", "curate", "--workspace", str(ws), "--quiet", *FAST_P, "-p", "seed=9")
    assert [p for p in (ws / "data").iterdir() if p.name.startswith(".curated.parquet.")]
    assert store.check_curation(ws) and len(read_instructions(ws, None)) > 0  # untouched: still one curation
    ingest([SHAREGPT], ws)
    assert not [p for p in (ws / "data").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# 5. inputs: the workspace is not its own source, files checked first, one JSON rule, CSV, Parquet
# ----------------------------------------------------------------------------------------------
def test_a_folder_holding_its_workspace_is_not_ingested_into_itself(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    _rows(folder / "cases.jsonl", 5, "c")
    ws = folder / "ws"
    for _ in range(3):  # every run: the same 5 rows, none of the workspace's own files
        result = ingest([str(folder)], ws)
        curate(ws, DataConfig(**FAST, bench_fraction=0.0), progress=False)
        assert result["total"] == 5 and [s["rows"] for s in result["sources"]] == [5]
    (ws / "rubrics").mkdir(exist_ok=True)
    (ws / "rubrics" / "generated.jsonl").write_text(json.dumps(make_rubric("r1")) + "\n")
    assert ingest([str(folder)], ws)["total"] == 5
    for inside in (ws / "data", ws / "data" / "train.parquet", ws / "data" / "instructions.parquet"):
        with pytest.raises(ValueError, match="the workspace's own step-00 data"):
            ingest([str(inside)], ws)
    # a folder inside the workspace (not its tables) is a source like any other
    assert ingest([str(ws / "rubrics")], ws)["added"] == 1


@pytest.mark.parametrize("bad", [
    {"decontaminate": ["missing.jsonl"]},
    {"decontaminate": ["{tmp}/empty_folder"]},
    {"taxonomy": "missing.yaml"},
    {"sources": ["missing.jsonl"]},
])
def test_every_input_file_is_checked_before_anything_runs(tmp_path, bad):
    (tmp_path / "empty_folder").mkdir()
    ws = tmp_path / "ws"
    ingest([SHAREGPT], ws)
    before = {p.name for p in (ws / "data").iterdir()}
    bad = {k: [x.replace("{tmp}", str(tmp_path)) for x in v] if isinstance(v, list) else v for k, v in bad.items()}

    class NoLLM:  # the label stages are on: they must never be reached
        def __getattr__(self, name):
            raise AssertionError("an LLM stage ran before the inputs were checked")

    config = DataConfig(**{**FAST, "difficulty": True, "classify": True, **bad})
    with pytest.raises(ValueError, match="missing|no such file|holds no"):
        curate(ws, config, progress=False, llm=NoLLM())
    assert {p.name for p in (ws / "data").iterdir()} == before
    args = [a for k, v in bad.items() for a in ("-p", f"{k}={json.dumps(v)}")]
    code, out, err = _run(["curate", "--workspace", str(ws), *FAST_P, *args])
    assert code == 1 and len(err.strip().splitlines()) == 1 and not out, err
    assert {p.name for p in (ws / "data").iterdir()} == before


@pytest.mark.parametrize("text, why", [
    ('[{"prompt": "a", "prompt": "b"}]', "duplicate key 'prompt'"),
    ('[{"prompt": "Is this ok?", "score": NaN}]', "NaN is not valid JSON"),
    ('[{"prompt": "Is this ok?", "score": -Infinity}]', "-Infinity is not valid JSON"),
    ('[{"prompt": "Is this ok?", "score": 1e999}]', "out of the float range"),
    ('{"data": [{"prompt": "x", "id": 1, "id": 2}]}', "duplicate key 'id'"),
])
def test_json_sources_follow_the_strict_jsonl_rule(tmp_path, text, why):
    path = tmp_path / "src.json"
    path.write_text(text)
    result = ingest([str(path)], tmp_path / "ws")
    assert result["added"] == 0 and len(result["problems"]) == 1
    assert "malformed JSON" in result["problems"][0] and why in result["problems"][0], result["problems"]
    # the same record as a JSONL line is refused for the same reason
    line = text[1:-1] if text.startswith("[") else text
    (tmp_path / "src.jsonl").write_text(line + "\n")
    result = ingest([str(tmp_path / "src.jsonl")], tmp_path / "ws2")
    assert result["added"] == 0 and why in result["problems"][0]


def test_csv_records_are_cut_as_the_csv_module_reads_them():
    rng = random.Random(23)
    pieces = ['a', 'b c', ',', '"', '""', '\n', '\r\n', '\r', 'x"y', '"q,\nr"', ' ', 'é', '",', ',"']
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        try:
            want = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error:
            want = "error"
        try:
            got = [row for lines in _csv_records(io.StringIO(text, newline=""), 10 ** 6)
                   for row in (csv.reader(lines) if lines != "open" else ["open"])]
        except csv.Error:
            got = "error"
        if got != "error" and got and got[-1] == "open":  # csv keeps an unclosed last field; the kit refuses it
            assert want != "error" and got[:-1] == want[:len(got) - 1]
            continue
        assert got == want, repr(text)


def test_an_over_long_quoted_csv_field_is_one_reject_and_its_lines_never_rows(tmp_path):
    inner = "\n".join(f"{900 + k},Is line {k} of the quoted field a row?" for k in range(50))
    for filler in ("z" * 200_000, "z" * 600_000):  # over the field limit; over the record limit too
        path = tmp_path / "q.csv"
        path.write_text(f'id,prompt\n1,What is a normal heart rate?\n2,"{filler}\n{inner}"\n'
                        f'3,Can I take ibuprofen with food?\n4,"never closed\n{inner}\n')
        result = ingest([str(path)], tmp_path / f"ws{len(filler)}")
        ids = [r for r in pq.read_table(tmp_path / f"ws{len(filler)}" / "data" / "instructions.parquet")["id"].to_pylist()]
        assert ids == ["q:1", "q:3"], ids
        assert [p.split(": ", 1)[0] for p in result["problems"]] == [f"{path}:2", f"{path}:4"], result["problems"]
        assert all("unreadable CSV row" in p for p in result["problems"])


def test_a_huge_one_line_csv_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.csv"
    with open(path, "w") as fh:
        fh.write("id,prompt\n1,")
        for _ in range(48):
            fh.write("y" * (1 << 20))
        fh.write("\n2,Is a resting heart rate of 50 normal for a runner?\n")
    tracemalloc.start()
    try:
        rows = list(iter_file(path, 20000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20, peak  # the file is 48 MiB; at most a record limit and one piece are held
    assert [(r, e is None) for r, _, e in rows] == [(1, False), (2, True)]
    head = tmp_path / "head.csv"  # an over-long header: one line, nothing else read
    head.write_text("a" * (1 << 21) + "\n1\n")
    assert [(r, e) for r, _, e in iter_file(head, 20000)] == [(0, "unreadable CSV header: over 524288 characters")]


def test_a_bit_flipped_parquet_file_is_rejected_not_read(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Distinctive question {i} about migraine with aura number {i}?"} for i in range(200)]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(rows), good, write_page_checksum=True)
    data = bytearray(good.read_bytes())
    at = data.find(b"migraine")
    for k, name in enumerate(("flip1.parquet", "flip2.parquet")):
        flipped = bytearray(data)
        flipped[at + 40 * k] ^= 0x04
        (tmp_path / name).write_bytes(bytes(flipped))
        result = ingest([str(tmp_path / name)], tmp_path / f"ws{k}")
        assert result["added"] == 0 and "CRC checksum verification failed" in result["problems"][0], result["problems"]
    # the kit's own tables carry checksums, and its readers verify them
    ws = tmp_path / "ws"
    _curated(ws)
    train = ws / "data" / "train.parquet"
    assert pq.ParquetFile(train).metadata.row_group(0).column(0).statistics is not None
    blob = bytearray(train.read_bytes())
    at = blob.find(b"user")
    blob[at] ^= 0x01
    train.write_bytes(bytes(blob))
    with pytest.raises(OSError, match="CRC checksum"):
        read_instructions(ws, "train")


# ----------------------------------------------------------------------------------------------
# 6. ids from any file name and row: valid, distinct, the original in the lineage, printed escaped
# ----------------------------------------------------------------------------------------------
HOSTILE_NAMES = ["my data", "my-data", "a\nb", "evil\u202etxt", "\x1b[31mred", "ｆｕｌｌ", "日本語", "-lead", "x" * 200,
                 "tab\there", "zero\u200bwidth", "ok_name"]
HOSTILE_IDS = ["a b", "a\nb", "\u202eevil", "\x1b[2J\x1b[H", "ok-1", "y" * 300, "Ａ1", "a:b/c", 7, "-x", "é", "line\u2028sep"]


def test_ids_from_hostile_file_names_and_rows_are_valid_distinct_and_traceable(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for n, name in enumerate(HOSTILE_NAMES):
        recs = [{"id": rid, "prompt": f"File {n} row {k}: how should fever number {n * 100 + k} be treated?"}
                for k, rid in enumerate(HOSTILE_IDS)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ws = tmp_path / "ws"
    result = ingest([str(folder)], ws)
    assert result["problems"] == [] and result["added"] == len(HOSTILE_NAMES) * len(HOSTILE_IDS)
    table = pq.read_table(ws / "data" / "instructions.parquet").to_pylist()
    assert all(id_problem(r["id"]) is None for r in table), [r["id"] for r in table if id_problem(r["id"])]
    assert len({r["id"] for r in table}) == len(table)
    assert len({r["source"] for r in table}) == len(HOSTILE_NAMES)
    # the lineage keeps the originals: the file's path and the row's own id
    by_path = {}
    for r in table:
        by_path.setdefault(Path(r["path"]).stem, []).append(r["original_id"])
    assert sorted(by_path) == sorted(HOSTILE_NAMES)
    assert all(ids == [str(i).strip() for i in HOSTILE_IDS] for ids in by_path.values())
    assert id_part("ok_name") == "ok_name" and id_part("my data") != id_part("my-data")
    assert ingest([str(folder)], ws)["already"] == len(table)  # stable: the same ids again
    # step 01 accepts every id as a rubric id
    curate(ws, DataConfig(**FAST, bench_fraction=0.0, near_dedup=False), progress=False)
    rubrics = instruction_rubrics(ws, None)
    assert rubrics and all(not rubric_problems(make_rubric(r.id)) for r in rubrics)


def test_my_data_jsonl_curates_and_its_ids_pass_step_01(tmp_path):
    path = tmp_path / "my data.jsonl"
    prompts = ["How long does a cold usually last in adults?", "Is ibuprofen safe during pregnancy?",
               "What does a high ferritin level mean?", "When should a child with fever see a doctor?",
               "Can anxiety cause palpitations at night?", "Which vaccines does a 65-year-old need?"]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    ws = tmp_path / "ws"
    ingest([str(path)], ws)
    curate(ws, DataConfig(**FAST, near_dedup=False, exact_dedup=False), progress=False)
    rubrics = instruction_rubrics(ws, None)
    assert len(rubrics) == 6 and all(r.id.startswith("my-data-") for r in rubrics)
    assert all(not rubric_problems(make_rubric(r.id)) for r in rubrics)
    assert {r.provenance["lineage"]["path"] for r in rubrics} == {str(path)}
    n = export(ws, tmp_path / "out.jsonl")
    assert n == 6


def test_data_from_rows_never_reaches_the_terminal_raw(tmp_path):
    path = tmp_path / "evil\x1b[31m.jsonl"
    recs = [{"id": "ok-1", "prompt": "Is a headache after a fall an emergency?"},
            {"id": "two\nlines", "prompt": "Is a headache after a fall an emergency?"},  # an exact duplicate
            {"id": "x", "conversations": [{"from": "\x1b[2Jrobot\u202e", "value": "hi"}]},
            {"id": "bidi\u202e", "prompt": "Can stress cause chest pain in teenagers?"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ws = tmp_path / "ws"
    code, out, err = _run(["ingest", str(path), "--workspace", str(ws)])
    assert code == 0
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text
        assert all(line.isprintable() for line in text.splitlines())
    assert len(err.strip().splitlines()) == 1 and "\\u001b[31m.jsonl:3: unknown role" in err  # one escaped reject
    curate(ws, DataConfig(**FAST, bench_fraction=0.0), progress=False)
    ids = pq.read_table(ws / "data" / "curated.parquet")["id"].to_pylist()
    rejects = [f"{path}:3", "no\nsuch\x1b[0m\u202e"]
    for item in ids + rejects:
        code, out, err = _run(["curate", "--workspace", str(ws), "--explain", item])
        text = out + err
        assert len(text.strip().splitlines()) == 1 and text.strip().isprintable(), repr(text)
        assert "\x1b" not in text and "\u202e" not in text
    line = explain(ws, [i for i in ids if "two" in i][0])["line"]
    assert "dropped at exact_dedup" in line and line.isprintable()
