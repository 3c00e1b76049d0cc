"""Candidate responses for training instructions, from a list of *sources*: local models
(transformers), vLLM, OpenAI-compatible endpoints (several served models, as the paper samples from
three strong models) and existing response files. Each candidate keeps its source, decoding
parameters and seed.

A source is a small typed description that a YAML file or a notebook parameter carries as a dict::

    {"kind": "openai", "model": "qwen3-8b", "base_url": "http://127.0.0.1:8000/v1", "temperature": 0.7}
    {"kind": "transformers", "model": "embedded", "temperature": 1.0}
    {"kind": "file", "path": "responses/physician.jsonl"}   # JSONL: prompt_id, response[, response_id]
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from promedical.core.files import write_jsonl
from promedical.core.jsonl import iter_jsonl
from promedical.core.rubric import Rubric
from promedical.models.llm import LLM, GenParams
from promedical.models.sources import Source, parse_sources


def read_responses(path: str | Path, prompt_ids: set[str] | None = None) -> list[dict]:
    """Existing responses from a JSONL of {prompt_id, response[, response_id]}; FILE:LINE errors.

    A response_id repeated, a missing or non-string field, or a prompt_id not in ``prompt_ids`` (when given)
    is an error naming the line; nothing is silently dropped.
    """
    rows, seen, errors = [], set(), []
    for line, obj, err in iter_jsonl(path):
        where = f"{path}:{line}"
        if err is not None:
            errors.append(f"{where}: {err}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{where}: expected an object with prompt_id and response")
            continue
        pid, text, rid = obj.get("prompt_id"), obj.get("response"), obj.get("response_id")
        if not isinstance(pid, str) or not pid:
            errors.append(f"{where}: prompt_id must be a non-empty string")
        elif not isinstance(text, str):
            errors.append(f"{where}: response must be a string")
        elif rid is not None and (not isinstance(rid, str) or not rid):
            errors.append(f"{where}: response_id must be a non-empty string when given")
        elif prompt_ids is not None and pid not in prompt_ids:
            errors.append(f"{where}: prompt_id {pid!r} has no rubric")
        else:
            key = (pid, rid)
            if rid is not None and key in seen:
                errors.append(f"{where}: response_id {rid!r} repeated for prompt {pid!r}")
            seen.add(key)
            rows.append({"prompt_id": pid, "response_id": rid, "response": text, "line": line})
        if len(errors) >= 20:
            break
    if errors:
        raise ValueError("\n".join(errors))
    return rows


def candidates_from_sources(rubrics: Sequence[Rubric], sources: Sequence[Mapping | Source], *, seed: int = 0,
                            cache_dir: str | Path | None = None, out_path: str | Path | None = None,
                            llms: Mapping[str, LLM] | None = None) -> list[dict]:
    """Candidates for every rubric from every source, each row carrying its source and decoding parameters.

    Model sources answer every instruction once (seed = the source's seed, or ``seed`` + its position);
    a file source contributes its responses for the rubrics' prompt ids. ``llms`` maps a source label to
    an already-loaded backend (a notebook reuses its model instead of loading it twice).
    """
    parsed = parse_sources(sources)
    ids = {r.id for r in rubrics}
    rows: list[dict] = []
    for p, source in enumerate(parsed):
        label = source.label()
        if source.kind == "file":
            for k, row in enumerate(read_responses(source.path, ids)):
                rid = row["response_id"] or f"{row['prompt_id']}-{label}-{k}"
                rows.append({"prompt_id": row["prompt_id"], "response_id": rid, "response": row["response"],
                             "source": label, "kind": "file", "path": str(source.path), "line": row["line"]})
            continue
        llm = (llms or {}).get(label) or source.make_llm(cache_dir)
        s = source.seed if source.seed is not None else seed + p
        params = source.params(s)
        texts = llm.generate([r.messages for r in rubrics], params)
        for rubric, text in zip(rubrics, texts, strict=True):
            rows.append({"prompt_id": rubric.id, "response_id": f"{rubric.id}-{label}", "response": text,
                         "source": label, "kind": source.kind, "model": llm.model_id,
                         **({"base_url": source.base_url} if source.base_url else {}),
                         "temperature": params.temperature, "top_p": params.top_p,
                         "repetition_penalty": params.repetition_penalty, "seed": s,
                         "max_new_tokens": params.max_new_tokens})
    ids_seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row["prompt_id"], row["response_id"])
        if key in ids_seen:
            raise ValueError(f"response id {row['response_id']!r} given twice for prompt {row['prompt_id']!r}")
        ids_seen.add(key)
    if out_path is not None:
        write_jsonl(out_path, rows)
    return rows


def policy_candidates(rubrics: Sequence[Rubric], policies: Sequence[tuple[LLM, float]], *,
                      max_new_tokens: int = 160, seed: int = 0, out_path: str | Path | None = None) -> list[dict]:
    """One response per (instruction, policy); each keeps its model, temperature, seed and length cap."""
    rows = []
    for p, (llm, temperature) in enumerate(policies):
        params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + p)
        texts = llm.generate([r.messages for r in rubrics], params)
        for rubric, text in zip(rubrics, texts):
            rows.append({"prompt_id": rubric.id, "response_id": f"{rubric.id}-p{p}", "response": text,
                         "model": llm.model_id, "temperature": temperature, "seed": seed + p,
                         "max_new_tokens": max_new_tokens, "source": f"{type(llm).__name__}:{llm.model_id}"})
    if out_path is not None:
        write_jsonl(out_path, rows)
    return rows
