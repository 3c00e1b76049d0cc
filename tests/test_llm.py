"""Generation backends: a real OpenAI-compatible server in a separate process, the on-disk cache,
backend selection, and local transformers generation with xgrammar-constrained JSON."""
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest
from conftest import torch_threads

from promedical.models.llm import (
    VLLMLLM,
    CachedLLM,
    GenParams,
    HTTPError,
    OpenAICompatibleLLM,
    RateLimiter,
    TransformersLLM,
    make_llm,
)

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "openai_server.py"
READY_TIMEOUT = 180  # seconds; the server imports torch and builds the tiny model (~10 s normally)

AB_SCHEMA = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"],
             "additionalProperties": False}
SMALL_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["answer", "level"],
                "properties": {"answer": {"enum": ["yes", "no", "maybe"]},
                               "level": {"type": "integer", "enum": [1, 2, 3]}}}


def ask(text):
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------------------------
# Server processes
# ----------------------------------------------------------------------------------------------
class Server:
    def __init__(self, name, args, log_dir):
        self.name = name
        self.log = open(log_dir / f"{name}.stderr.log", "w+b")
        # One torch thread each: three servers and pytest share the CPU, and a tiny model gains nothing
        # from more (oversubscribed threads made each request ~10x slower).
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = None

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, deadline):
        while self.port is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"server {self.name} not ready in {READY_TIMEOUT} s: {self.stderr()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.wait()}: {self.stderr()}")
            if line.startswith("READY "):
                self.port = int(line.split()[1])

    def stderr(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    @property
    def root(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self):
        return f"{self.root}/v1"

    def stats(self):
        with urllib.request.urlopen(f"{self.root}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self):
        req = urllib.request.Request(f"{self.root}/reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read()) == {"reset": True}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@contextmanager
def running_server(name: str, args: list, log_dir):
    """One test server process, ready to answer, stopped on exit."""
    server = Server(name, args, log_dir)
    try:
        server.wait_ready(time.monotonic() + READY_TIMEOUT)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Three real server processes, started together (they load in parallel), killed at teardown."""
    log_dir = tmp_path_factory.mktemp("servers")
    specs = {"plain": [], "flaky": ["--fail-first", "2"], "slow": ["--delay", "3"]}
    started = {}
    try:
        for name, args in specs.items():
            started[name] = Server(name, args, log_dir)
        deadline = time.monotonic() + READY_TIMEOUT
        for server in started.values():
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started.values():
            server.stop()
        for server in started.values():
            assert server.proc.poll() is not None, f"server {server.name} still running"


@pytest.fixture
def plain(servers):
    servers["plain"].reset()
    return servers["plain"]


@pytest.fixture
def flaky(servers):
    servers["flaky"].reset()
    return servers["flaky"]


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# ----------------------------------------------------------------------------------------------
@pytest.mark.subprocess
def test_server_is_a_separate_process_with_stats(plain):
    assert plain.proc.pid != os.getpid() and plain.proc.poll() is None
    stats = plain.stats()
    assert stats["requests"] == 0 and stats["failed"] == 0
    with urllib.request.urlopen(f"{plain.base_url}/models", timeout=10) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "tiny-qwen3"


@pytest.mark.subprocess
def test_concurrent_requests_return_texts_in_prompt_order(plain):
    prompts = [ask(f"Question {i}: {word}?") for i, word in enumerate(
        ["fever", "cough", "rash", "dizziness", "insomnia", "nausea", "back pain", "headache"])]
    params = GenParams(max_new_tokens=24, json_schema={"type": "object", "additionalProperties": False,
                                                       "required": ["w"],
                                                       "properties": {"w": {"type": "string", "maxLength": 10}}})
    concurrent = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", concurrency=4, timeout=60, max_retries=0)
    texts = concurrent.generate(prompts, params)
    stats = plain.stats()
    assert len(texts) == len(prompts) and all(isinstance(t, str) and t for t in texts)
    assert stats["requests"] == len(prompts) and stats["failed"] == 0
    assert 2 <= stats["max_inflight"] <= 4, stats  # really concurrent, and never more than asked for
    # Greedy decoding is deterministic: one-at-a-time answers equal the concurrent ones, in order.
    sequential = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", concurrency=1, timeout=60, max_retries=0)
    assert sequential.generate(prompts, params) == texts


@pytest.mark.subprocess
def test_request_body_carries_params(plain):
    llm = OpenAICompatibleLLM(plain.base_url, "my-model", api_key="secret", max_retries=0, timeout=60)
    llm.generate([ask("hello")], GenParams(max_new_tokens=5, seed=7, top_p=0.9, enable_thinking=False))
    body = plain.stats()["last_body"]
    assert body["model"] == "my-model" and body["messages"] == ask("hello")
    assert body["max_tokens"] == 5 and body["seed"] == 7 and body["top_p"] == 0.9
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "response_format" not in body


@pytest.mark.subprocess
def test_every_decoding_param_reaches_the_server(plain):
    """repetition_penalty goes as vLLM's extra body field; the server records what it decoded with."""
    llm = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", max_retries=0, timeout=60)
    sent = GenParams(max_new_tokens=6, temperature=0.7, top_p=0.8, seed=11, repetition_penalty=1.3)
    llm.generate([ask("hello")], sent)
    (seen,) = plain.stats()["params"]
    assert {k: seen[k] for k in ("max_new_tokens", "temperature", "top_p", "seed", "repetition_penalty")} == \
        {"max_new_tokens": 6, "temperature": 0.7, "top_p": 0.8, "seed": 11, "repetition_penalty": 1.3}
    assert plain.stats()["last_body"]["repetition_penalty"] == 1.3
    llm.generate([ask("hello")], GenParams(max_new_tokens=4))  # the neutral 1.0 is not sent (hosted APIs reject it)
    assert "repetition_penalty" not in plain.stats()["last_body"]


@pytest.mark.subprocess
@pytest.mark.model
def test_http_and_local_backends_decode_alike_with_repetition_penalty(plain, tiny):
    """The same params give the same text over HTTP as in-process: the penalty is applied on both sides."""
    prompts = [ask("List the warning signs of a stroke."), ask("Is a fever of 39 C in an adult worrying?")]
    penalised = GenParams(max_new_tokens=24, repetition_penalty=1.8)
    http = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", concurrency=2, max_retries=0, timeout=60)
    remote = http.generate(prompts, penalised)
    assert remote == tiny.generate(prompts, penalised)
    assert remote != http.generate(prompts, GenParams(max_new_tokens=24)), "the penalty changed nothing"


@pytest.mark.subprocess
def test_generate_each_keeps_answers_and_reports_failures(flaky):
    """Two 503s then answers: with no retries the first two items fail alone, the rest keep their text."""
    llm = OpenAICompatibleLLM(flaky.base_url, "tiny-qwen3", concurrency=1, max_retries=0, timeout=60)
    out = llm.generate_each([ask(f"q{i}") for i in range(4)], GenParams(max_new_tokens=4))
    assert [isinstance(x, HTTPError) for x in out] == [True, True, False, False]
    assert "HTTP 503" in str(out[0]) and all(isinstance(x, str) for x in out[2:])


@pytest.mark.subprocess
def test_cached_llm_never_caches_a_failure(flaky, tmp_path):
    llm = CachedLLM(OpenAICompatibleLLM(flaky.base_url, "tiny-qwen3", concurrency=1, max_retries=0, timeout=60),
                    tmp_path / "c")
    prompts = [ask("a"), ask("b"), ask("c")]
    first = llm.generate_each(prompts, GenParams(max_new_tokens=4))
    assert [isinstance(x, Exception) for x in first] == [True, True, False]
    second = llm.generate_each(prompts, GenParams(max_new_tokens=4))  # the two failures are asked again
    assert all(isinstance(x, str) for x in second) and second[2] == first[2]
    assert flaky.stats()["requests"] == 5 and (llm.hits, llm.misses) == (1, 5)


@pytest.mark.subprocess
def test_deadline_bounds_a_request_across_retries(servers):
    slow = servers["slow"]  # answers after 3 s
    llm = OpenAICompatibleLLM(slow.base_url, "tiny-qwen3", max_retries=10, backoff=0.05, timeout=60, deadline=1.0)
    start = time.monotonic()
    (out,) = llm.generate_each([ask("hello")], GenParams(max_new_tokens=4))
    assert isinstance(out, HTTPError) and time.monotonic() - start < 2.0
    with pytest.raises(ValueError, match="deadline"):
        OpenAICompatibleLLM(slow.base_url, "m", deadline=0)
    with pytest.raises(ValueError, match="concurrency"):
        OpenAICompatibleLLM(slow.base_url, "m", concurrency=0)


@pytest.mark.subprocess
def test_judge_keeps_a_remote_backends_requests_in_flight(servers):
    """The judge hands the OpenAI backend batches of 4 x its concurrency: with concurrency 16 more than
    the default batch of 8 requests are in flight at once, never more than 16."""
    from promedical.core.data import load_candidates, load_split
    from promedical.reward.judge import grade_responses

    slow = servers["slow"]  # 3 s per request: requests overlap only if the client sends them together
    deadline = time.monotonic() + 120
    while slow.stats()["inflight"] and time.monotonic() < deadline:  # earlier timeout tests left requests there
        time.sleep(0.5)
    slow.reset()
    cands = load_candidates(1)[:2]
    llm = OpenAICompatibleLLM(slow.base_url, "tiny-qwen3", concurrency=16, max_retries=0, timeout=120)
    judgments = grade_responses(load_split("bench"), cands, llm, use_checks=False, retries=0, progress=False,
                                explanation_chars=0)
    stats = slow.stats()
    assert stats["requests"] == len(judgments) > 16
    assert 8 < stats["max_inflight"] <= 16, stats["max_inflight"]


def test_rate_limit_spaces_request_starts():
    limiter = RateLimiter(20.0)  # one start every 50 ms, shared by threads
    starts = []
    from concurrent.futures import ThreadPoolExecutor

    def go(_):
        limiter.wait()
        starts.append(time.monotonic())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(go, range(11)))
    starts.sort()
    assert starts[-1] - starts[0] >= 0.45  # 10 gaps of 50 ms, whatever the thread count
    slow = RateLimiter(0.5)
    slow.wait()  # the next start is 2 s away: past a 0.1 s deadline, refused at once
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        slow.wait(deadline=time.monotonic() + 0.1)
    assert time.monotonic() - start < 0.1
    with pytest.raises(ValueError):
        RateLimiter(0)


@pytest.mark.subprocess
def test_json_schema_constrained_over_http(plain):
    llm = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", max_retries=0, timeout=60)
    texts = llm.generate([ask("Is a fever of 39 C in an adult worrying?"), ask("Rate this.")],
                         GenParams(max_new_tokens=40, json_schema=SMALL_SCHEMA))
    for text in texts:
        obj = json.loads(text)
        jsonschema.validate(obj, SMALL_SCHEMA)
    body = plain.stats()["last_body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SMALL_SCHEMA


@pytest.mark.subprocess
def test_max_tokens_is_honoured(plain):
    llm = OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", max_retries=0, timeout=60)
    # Three tokens cannot hold a complete object of this schema: the answer is a cut-off prefix.
    (short,) = llm.generate([ask("Answer.")], GenParams(max_new_tokens=3, json_schema=SMALL_SCHEMA))
    assert short.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(short)
    (full,) = llm.generate([ask("Answer.")], GenParams(max_new_tokens=40, json_schema=SMALL_SCHEMA))
    assert full.startswith(short) and len(full) > len(short)


@pytest.mark.subprocess
def test_retries_recover_from_503(flaky):
    llm = OpenAICompatibleLLM(flaky.base_url, "tiny-qwen3", max_retries=3, backoff=0.01, timeout=60)
    texts = llm.generate([ask("hello")], GenParams(max_new_tokens=12, json_schema=AB_SCHEMA))
    assert json.loads(texts[0])["a"] in ("x", "y")
    stats = flaky.stats()
    assert stats["requests"] == 3 and stats["failed"] == 2  # two 503s, then the answer


@pytest.mark.subprocess
def test_no_retries_raises_http_error_naming_the_url(flaky):
    llm = OpenAICompatibleLLM(flaky.base_url, "tiny-qwen3", max_retries=0, backoff=0.01, timeout=60)
    with pytest.raises(HTTPError) as info:
        llm.generate([ask("hello")], GenParams(max_new_tokens=4))
    message = str(info.value)
    assert flaky.base_url in message and "HTTP 503" in message and "1 attempt(s)" in message
    assert flaky.stats()["requests"] == 1


@pytest.mark.subprocess
def test_too_few_retries_give_up_after_every_attempt(flaky):
    llm = OpenAICompatibleLLM(flaky.base_url, "tiny-qwen3", max_retries=1, backoff=0.01, timeout=60)
    with pytest.raises(HTTPError, match=r"2 attempt\(s\).*HTTP 503"):
        llm.generate([ask("hello")], GenParams(max_new_tokens=4))
    assert flaky.stats()["requests"] == 2


@pytest.mark.subprocess
def test_non_retryable_status_is_not_retried(plain):
    llm = OpenAICompatibleLLM(f"{plain.root}/wrong", "tiny-qwen3", max_retries=3, backoff=0.01, timeout=60)
    with pytest.raises(HTTPError, match=r"/wrong: request failed after 1 attempt\(s\): HTTP 404"):
        llm.generate([ask("hello")])
    assert plain.stats()["requests"] == 0  # 404s never reach the chat endpoint


def test_connection_refused_raises_http_error():
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAICompatibleLLM(url, "m", max_retries=1, backoff=0.01, timeout=5)
    with pytest.raises(HTTPError, match=r"2 attempt\(s\)") as info:
        llm.generate([ask("hello")])
    assert url in str(info.value)


@pytest.mark.subprocess
def test_timeout_raises(servers):
    slow = servers["slow"]
    llm = OpenAICompatibleLLM(slow.base_url, "tiny-qwen3", max_retries=0, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(HTTPError, match=r"(?i)timed out") as info:
        llm.generate([ask("hello")], GenParams(max_new_tokens=4))
    assert time.monotonic() - start < 2.5  # gave up at the timeout, did not wait for the 3 s answer
    assert slow.base_url in str(info.value)


@pytest.mark.subprocess
def test_cached_llm_over_http(plain, tmp_path):
    cache = tmp_path / "cache"
    llm = CachedLLM(OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", max_retries=0, timeout=60), cache)
    prompts = [ask("What is a normal resting heart rate?"), ask("Can I take ibuprofen with food?")]
    params = GenParams(max_new_tokens=16, json_schema=AB_SCHEMA)

    first = llm.generate(prompts, params)
    assert plain.stats()["requests"] == 2 and (llm.hits, llm.misses) == (0, 2)
    second = llm.generate(prompts, params)
    assert second == first
    assert plain.stats()["requests"] == 2, "a cached call must not reach the server"
    assert (llm.hits, llm.misses) == (2, 2)

    # The cache is on disk: a new wrapper over the same folder is just as free.
    again = CachedLLM(OpenAICompatibleLLM(plain.base_url, "tiny-qwen3", max_retries=0, timeout=60), cache)
    assert again.generate(prompts, params) == first and plain.stats()["requests"] == 2

    # A changed param is a new key: new requests.
    llm.generate(prompts, GenParams(max_new_tokens=17, json_schema=AB_SCHEMA))
    assert plain.stats()["requests"] == 4
    # A mix of cached and new prompts only sends the new one and keeps the order.
    new = ask("Is a headache after a fall an emergency?")
    mixed = llm.generate([prompts[1], new, prompts[0]], params)
    assert plain.stats()["requests"] == 5
    assert mixed[0] == first[1] and mixed[2] == first[0]
    # A different model id is a different key too.
    other = CachedLLM(OpenAICompatibleLLM(plain.base_url, "another-model", max_retries=0, timeout=60), cache)
    other.generate(prompts[:1], params)
    assert plain.stats()["requests"] == 6


@pytest.mark.subprocess
def test_make_llm_builds_backends(plain, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        make_llm("nope")
    with pytest.raises(ValueError, match="needs base_url"):
        make_llm("openai", "tiny-qwen3")
    llm = make_llm("openai", "tiny-qwen3", base_url=plain.base_url, cache_dir=tmp_path / "c", max_retries=0)
    assert isinstance(llm, CachedLLM) and isinstance(llm.inner, OpenAICompatibleLLM)
    assert llm.inner.max_retries == 0 and llm.model_id == "tiny-qwen3"
    assert len(llm.generate([ask("hi")], GenParams(max_new_tokens=4))) == 1
    bare = make_llm("openai", "tiny-qwen3", base_url=plain.base_url + "/")
    assert isinstance(bare, OpenAICompatibleLLM) and bare.base_url == plain.base_url


def test_vllm_backend_without_vllm_says_how_to_install():
    assert importlib.util.find_spec("vllm") is None, "vllm is installed here; this test checks its absence"
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]") as info:
        VLLMLLM("embedded")
    assert isinstance(info.value.__cause__, ImportError)  # the real import failure is chained
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
        make_llm("vllm", "embedded")


# ----------------------------------------------------------------------------------------------
# Local transformers backend
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    with torch_threads(1):
        yield TransformersLLM("tiny-qwen3", batch_size=2)


@pytest.mark.model
def test_transformers_batch_returns_one_string_per_prompt(tiny):
    prompts = [ask("hi"), ask("a much longer question about chest pain that radiates to the arm"), ask("ok")]
    texts = tiny.generate(prompts, GenParams(max_new_tokens=8))  # batch_size 2: two chunks
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert tiny.generate(prompts, GenParams(max_new_tokens=8)) == texts  # greedy: deterministic


@pytest.mark.model
def test_transformers_json_schema_constrained_output_validates(tiny):
    # A random model left alone would never write this JSON; the grammar makes it.
    prompts = [ask("Pick one."), ask("A longer prompt so the batch needs left padding, pick one please."),
               ask("Third.")]
    texts = tiny.generate(prompts, GenParams(max_new_tokens=20, json_schema=AB_SCHEMA))
    assert len(texts) == 3
    for text in texts:
        obj = json.loads(text)
        jsonschema.validate(obj, AB_SCHEMA)
    sampled = tiny.generate(prompts, GenParams(max_new_tokens=20, json_schema=SMALL_SCHEMA, temperature=1.0, seed=3))
    for text in sampled:
        jsonschema.validate(json.loads(text), SMALL_SCHEMA)


@pytest.mark.model
def test_transformers_grammar_keeps_the_schema_property_order(tiny):
    schema = {"type": "object", "additionalProperties": False, "required": ["zeta", "alpha"],
              "properties": {"zeta": {"enum": ["z"]}, "alpha": {"enum": ["a"]}}}
    (text,) = tiny.generate([ask("go")], GenParams(max_new_tokens=24, json_schema=schema))
    assert json.loads(text) == {"zeta": "z", "alpha": "a"}
    assert text.index('"zeta"') < text.index('"alpha"')  # the draft schema relies on this order
