"""Step 00 without models: ingest (sources, shapes, lineage, bad rows), exact and MinHash dedup, the split
with decontamination, the funnel, card, --explain and --export, the config and the CLI's errors.
The two shipped samples have known duplicates, near duplicates and bad rows; the tests name each."""
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT

from promedical.core.text import ngram_jaccard
from promedical.corpus.config import DataConfig
from promedical.corpus.funnel import explain, export, read_funnel
from promedical.corpus.ingest import ingest
from promedical.corpus.records import RowError, record_to_instruction
from promedical.corpus.split import stratified_split
from promedical.corpus.step import curate
from promedical.corpus.store import instruction_rubrics, read_instructions

SHAREGPT = str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl")
MEDQA = str(ROOT / "data" / "samples" / "medqa_sample.csv")
FAST = dict(semantic_dedup=False, difficulty=False, classify=False, decontam_embeddings=False)

SHAREGPT_REJECTS = {
    7: "no user text: no user turn",
    8: "wrong type: conversations[0].value must be text, got int",
    9: "empty: turn 0 (user) has no text",
    10: "malformed JSON",
    11: "not valid UTF-8",
    12: "unknown role 'robot'",
    14: "duplicate id 'sg-013' (first on row 13)",
}
MEDQA_REJECTS = {5: "empty: question has no text", 6: "wrong number of fields: 3 (header has 7)"}


def _ingest_samples(ws):
    return ingest([SHAREGPT, MEDQA], ws)


def test_samples_ingest_keeps_and_rejects_exactly_these_rows(tmp_path):
    result = _ingest_samples(tmp_path)
    expected = [f"{SHAREGPT}:{row}: {why}" for row, why in SHAREGPT_REJECTS.items()] + \
               [f"{MEDQA}:{row}: {why}" for row, why in MEDQA_REJECTS.items()]
    assert len(result["problems"]) == len(expected)
    for line, want in zip(result["problems"], expected):
        assert line.startswith(want), (line, want)
    assert [s["rows"] for s in result["sources"]] == [15, 8]
    assert [s["added"] for s in result["sources"]] == [8, 6]
    assert result["added"] == 14 and result["rejected"] == 9
    table = pq.read_table(tmp_path / "data" / "instructions.parquet").to_pylist()
    ids = [r["id"] for r in table]
    assert ids == [f"sharegpt_sample:sg-00{i}" for i in range(1, 7)] + ["sharegpt_sample:sg-013", "sharegpt_sample:sg-015"] \
        + [f"medqa_sample:mq-00{i}" for i in (1, 2, 3, 4, 7, 8)]
    by_id = {r["id"]: r for r in table}
    # ShareGPT: system turn kept, trailing answer dropped, multi-turn kept as messages ending with the user
    assert [m["role"] for m in by_id["sharegpt_sample:sg-002"]["messages"]] == ["system", "user"]
    assert [m["role"] for m in by_id["sharegpt_sample:sg-003"]["messages"]] == ["user", "assistant", "user"]
    assert by_id["sharegpt_sample:sg-003"]["dropped_turns"] == 1
    # MedQA: question + options become one instruction; a row without options is a plain prompt
    mq = by_id["medqa_sample:mq-001"]["messages"][0]["content"]
    assert mq.endswith("Options:\nA. Central retinal artery occlusion\nB. Central retinal vein occlusion\n"
                       "C. Retinal detachment\nD. Acute angle-closure glaucoma")
    assert by_id["medqa_sample:mq-001"]["format"] == "question+options"
    assert by_id["medqa_sample:mq-008"]["format"] == "prompt"
    # lineage: source, path, row, original id
    assert (by_id["medqa_sample:mq-007"]["source"], by_id["medqa_sample:mq-007"]["path"],
            by_id["medqa_sample:mq-007"]["row"], by_id["medqa_sample:mq-007"]["original_id"]) == ("medqa_sample", MEDQA, 7, "mq-007")
    rejects = [json.loads(line) for line in (tmp_path / "data" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 9


def test_reingest_adds_nothing_twice(tmp_path):
    _ingest_samples(tmp_path)
    again = _ingest_samples(tmp_path)
    assert again["added"] == 0 and again["already"] == 14 and again["total"] == 14
    assert len(pq.read_table(tmp_path / "data" / "instructions.parquet")) == 14
    assert len((tmp_path / "data" / "rejects.jsonl").read_text().splitlines()) == 9


@pytest.mark.subprocess
def test_parquet_source_with_column_overrides_and_bad_rows(tmp_path):
    path = tmp_path / "export.parquet"
    rows = [{"uid": 1, "query": "Is it safe to take paracetamol and ibuprofen together for a fever?", "sys": "Be brief."},
            {"uid": 2, "query": None, "sys": None},
            {"uid": 3, "query": "x " * 400, "sys": None},
            {"uid": 4, "query": "What is a normal blood pressure for a 70-year-old?", "sys": ""}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    ws = tmp_path / "ws"
    result = ingest([str(path)], ws, columns={"prompt": "query", "system": "sys", "id": "uid"}, max_chars=500)
    assert result["problems"] == [f"{path}:2: wrong type: query must be text, got NoneType",
                                  f"{path}:3: over-long: 800 characters > max_chars 500"]
    table = pq.read_table(ws / "data" / "instructions.parquet").to_pylist()
    assert [r["id"] for r in table] == ["export:1", "export:4"]
    assert table[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": rows[0]["query"]}]
    assert table[1]["messages"] == [{"role": "user", "content": rows[3]["query"]}]
    # a corrupt file is one reject line; the other sources still go in, and the CLI exits 1
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    result = ingest([str(broken), MEDQA], ws)
    assert result["problems"][0].startswith(f"{broken}:0: unreadable file: ArrowInvalid") and result["added"] == 6
    out = _cli("ingest", str(broken), "--workspace", str(ws))
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [result["problems"][0]]


def test_folder_json_and_saved_dataset_sources(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps([{"instruction": "Explain what a statin does.", "input": "I am 60."},
                                               {"prompt": 5}]))
    (folder / "notes.txt").write_text("ignored")
    saved = tmp_path / "saved"
    Dataset.from_list([{"messages": [{"role": "user", "content": "How long does a migraine last?"},
                                     {"role": "assistant", "content": "Hours to days."}]}]).save_to_disk(str(saved))
    result = ingest([str(folder), str(saved)], tmp_path / "ws")
    assert result["problems"] == [f"{folder / 'a.json'}:2: wrong type: prompt must be text, got int"]
    table = pq.read_table(tmp_path / "ws" / "data" / "instructions.parquet").to_pylist()
    assert table[0]["source"] == "corpus/a" and table[0]["messages"][0]["content"] == "Explain what a statin does.\n\nI am 60."
    assert table[0]["id"].startswith("corpus/a:h")  # no id column: a content hash
    assert table[1]["source"] == "saved" and table[1]["messages"] == [{"role": "user", "content": "How long does a migraine last?"}]


def test_kit_rubrics_keep_their_rubrics_and_same_named_files_stay_apart(tmp_path):
    """The shipped demo data as a user's corpus: two files both named rubrics.jsonl."""
    train, bench = str(ROOT / "data" / "train" / "rubrics.jsonl"), str(ROOT / "data" / "bench" / "rubrics.jsonl")
    result = ingest([train, bench], tmp_path)
    assert result["added"] == 90 and result["problems"] == []
    assert ingest([bench], tmp_path)["already"] == 30  # re-ingesting finds the same names again
    curate(tmp_path, DataConfig(**FAST), progress=False)
    rubrics = {r.id: r for r in instruction_rubrics(tmp_path, None)}
    assert len(rubrics) == 90 and {i.split(":")[0] for i in rubrics} == {"rubrics", "bench/rubrics"}
    r = rubrics["rubrics:tr-001"]
    assert r.category == "triage_emergency" and len(r.criteria) == 8 and r.provenance["lineage"]["row"] == 1
    funnel = read_funnel(tmp_path)
    assert sum(v["bench"] for v in funnel["by_category"].values()) == round(0.2 * 90)
    assert set(funnel["by_category"]) == {"chronic_disease", "medication", "mental_health", "paediatrics",
                                          "test_results", "triage_emergency", "womens_health"}
    # a fixed bench: the shipped benchmark file stays the bench
    funnel = curate(tmp_path, DataConfig(**FAST, bench_sources=[bench]), progress=False)
    assert (funnel["train"], funnel["bench"]) == (60, 30)
    assert {r["lineage"]["original_id"][:3] for r in read_instructions(tmp_path, "bench")} == {"bn-"}


def test_shapes_healthbench_kit_rubric_options_and_errors():
    from conftest import make_rubric

    hb = {"prompt_id": "hb-1", "prompt": [{"role": "user", "content": "My chest hurts when I breathe in."}],
          "rubrics": [{"criterion": "Asks about red flags.", "points": 5, "tags": []}]}
    rec = record_to_instruction(hb)
    assert rec["format"] == "healthbench" and rec["original_id"] == "hb-1" and rec["rubric"]["criteria"]
    kit = record_to_instruction(make_rubric("r9"))
    assert kit["format"] == "kit-rubric" and kit["rubric"]["id"] == "r9" and kit["category"] == "triage_emergency"
    mc = record_to_instruction({"question": "Which vitamin deficiency causes scurvy?", "options": {"A": "C", "B": "D"}})
    assert mc["messages"][0]["content"] == "Which vitamin deficiency causes scurvy?\n\nOptions:\nA. C\nB. D"
    mcq = record_to_instruction({"question": "First-line drug?", "opa": "x", "opb": "y", "opc": "", "opd": "z"})
    assert mcq["messages"][0]["content"].endswith("A. x\nB. y\nD. z")
    msgs = record_to_instruction({"messages": [{"role": "user", "content": "hi doc"}, {"role": "assistant", "content": "hello"}]})
    assert msgs["messages"] == [{"role": "user", "content": "hi doc"}] and msgs["dropped_turns"] == 1
    for bad, why in ((["x"], "wrong type: a row must be an object"), ({"foo": "bar"}, "no user text"),
                     ({"prompt": "ok", "id": 1.5}, "wrong type: id"), ({"prompt": "bad \x00 byte"}, "not valid UTF-8"),
                     ({"conversations": []}, "wrong type: conversations must be a non-empty list"),
                     ({**hb, "rubrics": []}, "HealthBench record: rubrics")):
        with pytest.raises(RowError, match=why.replace("(", r"\(")):
            record_to_instruction(bad)


def test_curate_funnel_reasons_explain_export_and_card(tmp_path):
    _ingest_samples(tmp_path)
    funnel = curate(tmp_path, DataConfig(**FAST), progress=False)
    stages = [(s["stage"], s["in"], s["out"]) for s in funnel["stages"]]
    assert stages == [("ingest", 23, 14), ("exact_dedup", 14, 11), ("near_dedup", 11, 9), ("split", 9, 9),
                      ("decontaminate", 9, 9)]
    assert funnel == read_funnel(tmp_path)
    assert funnel["train"] + funnel["bench"] == 9 and funnel["bench"] == round(0.2 * 9)
    assert funnel["by_source"] == {"medqa_sample": {"ingested": 6, "kept": 3}, "sharegpt_sample": {"ingested": 8, "kept": 6}}
    dropped = {r["id"]: r for r in pq.read_table(tmp_path / "data" / "curated.parquet").to_pylist() if not r["kept"]}
    assert {i: (r["stage"], r["duplicate_of"]) for i, r in dropped.items()} == {
        "sharegpt_sample:sg-004": ("exact_dedup", "sharegpt_sample:sg-001"),
        "sharegpt_sample:sg-005": ("near_dedup", "sharegpt_sample:sg-002"),
        "medqa_sample:mq-003": ("exact_dedup", "medqa_sample:mq-001"),
        "medqa_sample:mq-004": ("near_dedup", "medqa_sample:mq-002"),
        "medqa_sample:mq-008": ("exact_dedup", "sharegpt_sample:sg-015"),  # across sources
    }
    # the near-duplicate score is the audit's word-trigram Jaccard of the two texts
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "data" / "instructions.parquet").to_pylist()}
    assert dropped["medqa_sample:mq-004"]["score"] == pytest.approx(
        ngram_jaccard(rows["medqa_sample:mq-004"]["text"], rows["medqa_sample:mq-002"]["text"]), abs=1e-3)
    assert explain(tmp_path, "sharegpt_sample:sg-005")["line"].startswith(
        "sharegpt_sample:sg-005: dropped at near_dedup: near duplicate of sharegpt_sample:sg-002 (word-trigram Jaccard 0.8")
    assert explain(tmp_path, f"{SHAREGPT}:12")["line"] == f"{SHAREGPT}:12: rejected at ingest: unknown role 'robot' in " \
        "conversations[0] (expected one of assistant, bot, chatgpt, gpt, human, model, system, user)"
    assert "kept in" in explain(tmp_path, "sharegpt_sample:sg-001")["line"]
    with pytest.raises(KeyError):
        explain(tmp_path, "nope")
    # export: the kept rows with split and lineage
    n = export(tmp_path, tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert n == len(out) == 9
    assert {o["split"] for o in out} == {"train", "bench"}
    assert all(o["lineage"]["source"] in ("sharegpt_sample", "medqa_sample") and o["lineage"]["row"] >= 1 for o in out)
    # the reader other steps call, and the Rubric view for step 01
    train, bench = read_instructions(tmp_path, "train"), read_instructions(tmp_path, "bench")
    assert len(train) == funnel["train"] and len(bench) == funnel["bench"]
    assert not {r["id"] for r in train} & {r["id"] for r in bench}
    assert all(r["messages"][-1]["role"] == "user" for r in train + bench)
    rubrics = instruction_rubrics(tmp_path, None)
    assert len(rubrics) == 9 and all(r.criteria == [] for r in rubrics)
    multi = next(r for r in rubrics if r.id == "sharegpt_sample:sg-003")
    assert isinstance(multi.instruction, list) and multi.instruction[-1]["role"] == "user"
    # dataset card: YAML header as Hub cards have, the funnel table
    card = (tmp_path / "data" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0] == {"split": "train", "path": "train.parquet"}
    assert "| near_dedup | 11 | 9 | 2 |" in card


def test_split_is_stratified_and_decontaminated(tmp_path):
    # 4 categories x 10 instructions; every 5th instruction has a reworded twin in the same category:
    # with dedup off, whichever twin lands in bench, the train twin must go.
    import random

    words = ("fever cough rash headache nausea fatigue dizziness swelling itching numbness wheeze cramps bruising "
             "insomnia palpitations tremor thirst weakness stiffness tingling hoarseness sweating chills jaundice "
             "bloating heartburn constipation diarrhoea vomiting fainting").split()
    rng = random.Random(0)
    recs = []
    for c, cat in enumerate(["cardiology", "dermatology", "neurology", "psychiatry"]):
        for k in range(10):
            text = f"In {cat}: " + " ".join(rng.sample(words, 14)) + " - what should happen next?"
            recs.append({"id": f"{c}-{k}", "prompt": text, "category": cat, "specialty": cat})
            if k % 5 == 0:
                recs.append({"id": f"{c}-{k}-twin", "prompt": text.replace("what should happen next?", "what next?"),
                             "category": cat, "specialty": cat})
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ws = tmp_path / "ws"
    ingest([str(path)], ws)
    cfg = DataConfig(**{**FAST, "exact_dedup": False, "near_dedup": False, "bench_fraction": 0.25, "seed": 3})
    funnel = curate(ws, cfg, progress=False)
    train, bench = read_instructions(ws, "train"), read_instructions(ws, "bench")
    # stratified: the bench keeps the category mix (12 of 48 = 3 per category)
    assert {c: v["bench"] for c, v in funnel["by_category"].items()} == {c: 3 for c in
                                                                        ["cardiology", "dermatology", "neurology", "psychiatry"]}
    assert funnel["by_category"]["cardiology"]["train"] + funnel["by_category"]["cardiology"]["bench"] <= 12
    # decontaminated: no kept train item is a near duplicate of a bench item by the audit's threshold
    assert max(ngram_jaccard(t["text"], b["text"]) for t in train for b in bench) < 0.5
    curated = pq.read_table(ws / "data" / "curated.parquet").to_pylist()
    decon = [r for r in curated if r["stage"] == "decontaminate"]
    bench_ids = {b["id"] for b in bench}
    assert decon and all(r["duplicate_of"] in bench_ids and "near duplicate of bench item" in r["reason"] for r in decon)
    audit = json.loads((ws / "data" / "split_audit.json").read_text())
    assert audit["verdict"] == "independent" and audit["counts"]["ngram"] == 0


def test_stratified_split_sizes_and_determinism():
    ids = [f"i{k}" for k in range(30)]
    strata = ["a"] * 20 + ["b"] * 7 + ["c"] * 3
    s1 = stratified_split(ids, strata, size=10, seed=1)
    assert s1 == stratified_split(list(reversed(ids)), list(reversed(strata)), size=10, seed=1)  # order-free
    bench = [i for i, s in s1.items() if s == "bench"]
    assert len(bench) == 10
    assert sum(strata[ids.index(i)] == "a" for i in bench) in (6, 7)
    assert stratified_split(ids, strata, fraction=0.0) == {i: "train" for i in ids}


def test_decontaminate_against_an_outside_benchmark(tmp_path):
    _ingest_samples(tmp_path)
    hb = tmp_path / "healthbench.jsonl"
    hb.write_text(json.dumps({
        "prompt_id": "hb-cough", "example_tags": [],
        "prompt": [{"role": "user", "content": "I've had a dry cough for three weeks since a cold, no fever, but it keeps "
                                               "me awake at night. I'm 52 and never smoked. Should I be worried?"}],
        "rubrics": [{"criterion": "Advises a GP review.", "points": 5, "tags": []}]}) + "\n")
    funnel = curate(tmp_path, DataConfig(**FAST, bench_fraction=0.0, decontaminate=[str(hb)]), progress=False)
    gone = explain(tmp_path, "sharegpt_sample:sg-001")
    assert gone["stage"] == "decontaminate" and gone["duplicate_of"] == "healthbench:hb-cough"
    assert f"near duplicate of outside benchmark {hb} item hb-cough (ngram 0." in gone["reason"]
    assert funnel["stages"][-1] == {"stage": "decontaminate", "in": 9, "out": 8,
                                    "by_source": {"medqa_sample": 3, "sharegpt_sample": 5}}
    audit = json.loads((tmp_path / "data" / "split_audit.json").read_text())
    assert audit["outside_benchmarks"] == [{"source": str(hb), "items": 1}]


def test_config_validation_names_field_and_valid_values():
    for params, message in (({"bench_fraction": 1.5}, "parameter bench_fraction: must be a number in [0, 1)"),
                            ({"difficulty_band": [9, 5]}, "parameter difficulty_band: must be [low, high]"),
                            ({"backend": "tgi"}, "parameter backend: must be one of transformers, vllm, openai"),
                            ({"backend": "openai"}, "parameter base_url: backend=openai needs base_url"),
                            ({"columns": {"prompt ": "q"}}, "parameter columns: unknown key(s) prompt ; valid: prompt"),
                            ({"near_dedup": "yes"}, "parameter near_dedup: must be true or false"),
                            ({"wat": 1}, "parameter 'wat': unknown for step data (known: backend, base_url")):
        with pytest.raises(ValueError) as info:
            DataConfig.from_dict(params)
        assert str(info.value).startswith(message), str(info.value)
    assert DataConfig.from_dict({"sources": "a.jsonl"}).sources == ["a.jsonl"]
    assert all(DataConfig.help().values())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "promedical", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.subprocess
def test_cli_ingest_curate_explain_export_and_errors(tmp_path):
    ws = str(tmp_path / "ws")
    out = _cli("ingest", SHAREGPT, MEDQA, "--workspace", ws)
    assert out.returncode == 0, out.stderr
    assert len(out.stderr.strip().splitlines()) == 9 and f"{MEDQA}:6: wrong number of fields" in out.stderr
    assert "15 rows, 8 added, 0 already ingested, 7 rejected" in out.stdout
    out = _cli("curate", "--workspace", ws, "--quiet", "--export", str(tmp_path / "x.jsonl"),
               *[a for k, v in FAST.items() for a in ("-p", f"{k}={str(v).lower()}")])
    assert out.returncode == 0, out.stderr
    assert "near_dedup:      11 ->       9" in out.stdout and "exported 9 instructions" in out.stdout
    out = _cli("curate", "--workspace", ws, "--explain", "medqa_sample:mq-008")
    assert out.stdout.strip() == ("medqa_sample:mq-008: dropped at exact_dedup: exact duplicate of sharegpt_sample:sg-015 "
                                  "(same normalised text)")
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    for args, code in ((("ingest", "missing.jsonl", "--workspace", ws), 1),
                       (("ingest", SHAREGPT, "--workspace", ws, "--columns", "prompt"), 2),
                       (("ingest", str(nodata), "--workspace", ws), 1),  # a folder with no data files
                       (("curate", "--workspace", ws, "--explain", "nope"), 1),
                       (("curate", "--workspace", ws, "-p", "bench_fraction=7"), 2),
                       (("curate", "--workspace", str(tmp_path / "empty")), 1)):
        out = _cli(*args)
        assert out.returncode == code, (args, out.returncode, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
