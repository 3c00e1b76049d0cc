"""LLM labels for step 00: difficulty 0-10 with a reason, and category/specialty from a taxonomy.

Both are constrained JSON on every backend (xgrammar on transformers, structured outputs on vLLM,
``response_format: json_schema`` on OpenAI-compatible servers), through the kit's ``make_llm`` with its
on-disk cache. Results are appended to a JSONL as each chunk returns; a re-run skips ids already
answered. A backend error (server down) is recorded as ``status: "error"`` and retried on the next run,
never counted as done; output that does not parse is ``status: "failed"`` with the reason.
The prompts below are the whole instruction to the model; the dataset card and docs/00_corpus.md point here.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from promedical.core.files import append_jsonl
from promedical.core.jsonl import iter_jsonl
from promedical.models.llm import LLM, GenParams, batch_size_for

PROMPT_VERSION = "2026-12-v1"


DIFFICULTY_PROMPT = """You rate how hard a medical instruction is for an AI assistant to answer well and safely.
Scale 0-10:
0-2: trivial or not medical (greetings, a one-word definition).
3-4: routine factual question with one clear answer.
5-6: needs clinical reasoning over several facts, or tailoring advice to the person.
7-8: complex: several conditions or medicines, unclear symptoms, safety trade-offs or red flags to catch.
9: expert level: rare conditions, conflicting evidence, high stakes under uncertainty.
10: cannot be answered responsibly at all.
Write one short sentence as the reason, then the number. Answer with JSON only."""


CLASSIFY_PROMPT = """You sort medical instructions. Choose the one category and the one medical specialty that fit
the instruction best, from the allowed values only. Answer with JSON only."""


# The kit's taxonomy: the categories and specialties of the shipped demo corpus (data/DATA_CARD.md).
CATEGORIES = ["triage_emergency", "medication", "chronic_disease", "womens_health", "mental_health", "paediatrics",
              "test_results"]


SPECIALTIES = ["addiction medicine", "allergy", "breast surgery", "cardiology", "child psychiatry", "dermatology",
               "emergency medicine", "endocrinology", "gastroenterology", "general practice", "general surgery",
               "geriatrics", "gynaecology", "haematology", "hepatology", "infectious disease", "neonatology",
               "nephrology", "neurology", "obstetrics", "oncology", "ophthalmology", "orthopaedics", "paediatrics",
               "pharmacology", "podiatry", "psychiatry", "pulmonology", "rheumatology", "sexual health",
               "sleep medicine", "urology"]


def load_taxonomy(path: str | Path | None = None) -> dict:
    """{"categories": [...], "specialties": [...]}: the kit's, or a JSON/YAML file's (both lists required)."""
    if path is None:
        return {"categories": list(CATEGORIES), "specialties": list(SPECIALTIES)}
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"taxonomy: no such file {path}")
    if path.stat().st_size > 1 << 20:
        raise ValueError(f"taxonomy: {path} is over 1 MiB")
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"taxonomy: {path}: cannot parse: {str(exc).splitlines()[0]}") from None
    out = {}
    for key in ("categories", "specialties"):
        values = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise ValueError(f"taxonomy: {path}: {key} must be a non-empty list of names")
        out[key] = list(dict.fromkeys(v.strip() for v in values))
    return out


def difficulty_schema() -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["reason", "difficulty"],
            "properties": {"reason": {"type": "string", "minLength": 5, "maxLength": 200},
                           "difficulty": {"type": "integer", "enum": list(range(11))}}}


def classify_schema(taxonomy: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["category", "specialty"],
            "properties": {"category": {"type": "string", "enum": taxonomy["categories"]},
                           "specialty": {"type": "string", "enum": taxonomy["specialties"]}}}


def difficulty_messages(text: str) -> list[dict]:
    return [{"role": "system", "content": DIFFICULTY_PROMPT}, {"role": "user", "content": f"Instruction:\n{text}"}]


def classify_messages(text: str, taxonomy: dict) -> list[dict]:
    allowed = (f"Categories: {', '.join(taxonomy['categories'])}\n"
               f"Specialties: {', '.join(taxonomy['specialties'])}")
    return [{"role": "system", "content": f"{CLASSIFY_PROMPT}\n{allowed}"},
            {"role": "user", "content": f"Instruction:\n{text}"}]


def _json_object(raw: str) -> dict:
    body = raw.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    start = body.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    obj, _ = json.JSONDecoder().raw_decode(body[start:])
    if not isinstance(obj, dict):
        raise ValueError("the JSON is not an object")
    return obj


def parse_difficulty(raw: str) -> dict:
    """{"difficulty": int 0-10, "reason": str}; ValueError with the reason otherwise."""
    obj = _json_object(raw)
    d = obj.get("difficulty")
    if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 10:
        raise ValueError(f"difficulty must be an integer 0-10, got {d!r}")
    reason = obj.get("reason")
    return {"difficulty": d, "reason": reason.strip()[:300] if isinstance(reason, str) else ""}


def parse_classification(raw: str, taxonomy: dict) -> dict:
    obj = _json_object(raw)
    out = {}
    for key, allowed in (("category", taxonomy["categories"]), ("specialty", taxonomy["specialties"])):
        value = obj.get(key)
        if value not in allowed:
            raise ValueError(f"{key} {value!r} is not in the taxonomy")
        out[key] = value
    return out


def read_results(path: str | Path) -> dict[str, dict]:
    """The last record per id in a results file (a retried id's newer record wins)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {obj["id"]: obj for _, obj, err in iter_jsonl(path) if err is None and isinstance(obj, dict) and "id" in obj}


def label(items: list[tuple[str, str]], llm: LLM, out_path: str | Path, *, kind: str, taxonomy: dict | None = None,
          max_new_tokens: int = 96, chunk: int = 64, progress: bool = True) -> dict[str, dict]:
    """Label (id, text) items; kind is "difficulty" or "classify". Appends each result to out_path and
    returns {id: last record} for the items. Ids already answered (ok or failed) are skipped."""
    from tqdm.auto import tqdm

    if kind not in ("difficulty", "classify"):
        raise ValueError(f"kind must be difficulty or classify, got {kind!r}")
    out_path = Path(out_path)
    results = read_results(out_path)
    todo = [(i, t) for i, t in items if results.get(i, {}).get("status") not in ("ok", "failed")]
    schema = difficulty_schema() if kind == "difficulty" else classify_schema(taxonomy)
    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.1, json_schema=schema)
    chunk = batch_size_for(llm, chunk)  # a served model: enough prompts per call to keep its requests in flight
    bar = tqdm(total=len(todo), desc=kind, disable=not progress)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        prompts = [difficulty_messages(t) if kind == "difficulty" else classify_messages(t, taxonomy) for _, t in part]
        t0 = time.perf_counter()
        try:  # one text or exception per item: a failed request fails alone
            texts = llm.generate_each(prompts, params)
            if len(texts) != len(part):
                raise RuntimeError(f"the backend returned {len(texts)} texts for {len(part)} prompts")
        except Exception as exc:  # recorded per item; retried on the next run
            texts = [exc] * len(part)
        seconds = round((time.perf_counter() - t0) / len(part), 3)
        for (item_id, _), raw in zip(part, texts):
            rec = {"id": item_id, "model": llm.model_id, "prompt_version": PROMPT_VERSION, "seconds": seconds}
            if isinstance(raw, Exception) or not isinstance(raw, str):  # never "answered": asked again next run
                error = raw if isinstance(raw, Exception) else TypeError(f"the backend returned {type(raw).__name__}")
                rec.update(status="error", error=f"backend error: {type(error).__name__}: {str(error)[:300]}")
            else:
                try:
                    parsed = parse_difficulty(raw) if kind == "difficulty" else parse_classification(raw, taxonomy)
                    rec.update(status="ok", **parsed)
                except ValueError as exc:
                    rec.update(status="failed", error=str(exc)[:300], raw=raw[:500])
            append_jsonl(out_path, rec)
            results[item_id] = rec
            bar.update(1)
    bar.close()
    return {i: results[i] for i, _ in items if i in results}
