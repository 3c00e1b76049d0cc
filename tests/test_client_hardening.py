"""The OpenAI-compatible HTTP client against hostile servers on 127.0.0.1 (real sockets, in threads):
a wall-clock deadline across the whole request (trickled headers or body), redirects that would change
the method or the origin are not followed, and a 200 without usable content is a failure that is never
cached and is asked again on the next run (curation labels included)."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promedical.core.data import load_split
from promedical.corpus.label import label, read_results
from promedical.models.llm import CachedLLM, HTTPError, OpenAICompatibleLLM, make_llm
from promedical.reward.judge import grade_responses

HI = [[{"role": "user", "content": "hi"}]]
GRADE = json.dumps({"explanation": "The response says so.", "criteria_met": True})
SLACK = 1.5  # seconds over the deadline a call may take (thread start-up, a busy CI machine)


def completion(content) -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}]}).encode()


# ---------------------------------------------------------------------------------------------- trickle
class Trickler:
    """A raw-socket server that reads a request, then sends ``prefix`` at once and ``trickle`` one byte
    every ``interval`` seconds (forever, repeating it) until the client goes away or the test ends."""

    def __init__(self, prefix: bytes, trickle: bytes, interval: float = 0.5):
        self.prefix, self.trickle, self.interval = prefix, trickle, interval
        self.stop = threading.Event()
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            try:
                conn.settimeout(5)
                conn.recv(65536)  # the request (small enough for one read)
                conn.sendall(self.prefix)
                n = 0
                while not self.stop.wait(self.interval):
                    conn.sendall(self.trickle[n % len(self.trickle):n % len(self.trickle) + 1])
                    n += 1
            except OSError:  # the client shut its socket: this attempt is over
                return

    def close(self):
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def trickler():
    made = []

    def make(prefix, trickle, interval=0.5):
        made.append(Trickler(prefix, trickle, interval))
        return made[-1]

    yield make
    for t in made:
        t.close()


BODY = completion(GRADE)
TRICKLES = {
    "headers": (b"", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 10_000),
    "body": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY), BODY),
    "body-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(BODY), BODY),
    "body-until-close": (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n", BODY),
}


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


@pytest.mark.parametrize("kind", sorted(TRICKLES))
def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(kind, trickler):
    server = trickler(*TRICKLES[kind])
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{server.port}/v1", "m", timeout=30, deadline=2.0,
                              max_retries=3, backoff=0.05)
    out, seconds = timed(lambda: llm.generate_each(HI))
    assert seconds < 2.0 + SLACK, seconds
    assert isinstance(out[0], HTTPError) and "TimeoutError" in str(out[0]), out


@pytest.mark.parametrize("kind", ["headers", "body"])
def test_the_per_attempt_timeout_is_wall_clock_too(kind, trickler):
    server = trickler(*TRICKLES[kind], interval=0.2)  # each read is fast; the attempt never completes
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{server.port}/v1", "m", timeout=1.0, deadline=60, max_retries=1,
                              backoff=0.05)
    out, seconds = timed(lambda: llm.generate_each(HI))
    assert seconds < 2 * 1.0 + 0.1 + SLACK, seconds
    assert isinstance(out[0], HTTPError) and "2 attempt(s)" in str(out[0])
    assert server.connections == 2


def test_a_trickled_judgment_is_unknown_never_a_verdict(trickler):
    server = trickler(*TRICKLES["body"])
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{server.port}/v1", "m", timeout=30, deadline=1.5, max_retries=0)
    rubric = next(r for r in load_split("bench") if any(c.check is None for c in r.criteria))
    response = {"prompt_id": rubric.id, "response_id": "r1", "response": "Call your doctor."}
    judgments, seconds = timed(lambda: grade_responses([rubric], [response], llm, retries=0, progress=False))
    llm_graded = [j for j in judgments if j.source != "check"]
    assert llm_graded and all(j.met is None and j.source == "unknown" for j in llm_graded)
    assert seconds < 1.5 * 2 + SLACK  # judge batches are concurrent: one deadline, not one per criterion


def test_every_openai_backend_has_a_deadline(tmp_path):
    """No stage can build an OpenAI-compatible backend without one: a missing deadline is the default."""
    built = make_llm("openai", "m", base_url="http://127.0.0.1:9/v1")
    assert built.deadline == OpenAICompatibleLLM.DEFAULT_DEADLINE
    cached = make_llm("openai", "m", base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path, timeout=900.0)
    assert cached.inner.deadline == 900.0  # never shorter than one attempt
    for bad in (0, -1, float("nan"), float("inf"), 1e308, 10**9, True, "10"):
        with pytest.raises(ValueError, match="deadline"):
            OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m", deadline=bad)
        with pytest.raises(ValueError, match="timeout"):
            OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m", timeout=bad)


def test_curation_labels_over_openai_have_a_deadline(tmp_path):
    from promedical.core.workspace import Workspace
    from promedical.corpus.config import DataConfig
    from promedical.corpus.step import _label_llm

    cfg = DataConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    llm = _label_llm(cfg, Workspace.of(tmp_path))
    assert llm.inner.deadline == OpenAICompatibleLLM.DEFAULT_DEADLINE


# ---------------------------------------------------------------------------------------------- redirects
class Recorder:
    """A real HTTP server that records (method, path, Authorization, body) and either redirects the chat
    endpoint with ``code`` to ``location`` or answers a chat completion to anything."""

    def __init__(self, code=None):
        self.seen, self.code, self.location = [], code, None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
                if server.code and self.path == "/v1/chat/completions":
                    self.send_response(server.code)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                reply = completion("ok")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorders():
    made = []

    def make(code=None):
        made.append(Recorder(code))
        return made[-1]

    yield make
    for r in made:
        r.close()


def client(port):
    return OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", "m", api_key="sk-secret", max_retries=2,
                               backoff=0.01, timeout=10)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("where", ["other-port", "other-host", "other-scheme"])
def test_a_redirect_to_another_origin_is_never_followed(code, where, recorders):
    target, front = recorders(), recorders(code)
    front.location = {"other-port": f"http://127.0.0.1:{target.port}/v1/chat/completions",
                      "other-host": f"http://localhost:{front.port}/landing",
                      "other-scheme": f"https://127.0.0.1:{front.port}/landing"}[where]
    with pytest.raises(HTTPError, match=f"HTTP {code} redirect .* not followed"):
        client(front.port).generate(HI)
    assert target.seen == []  # the other origin heard nothing: neither the request nor the key
    assert [(m, p) for m, p, _, _ in front.seen] == [("POST", "/v1/chat/completions")]  # not retried either


@pytest.mark.parametrize("code", [301, 302, 303])
def test_a_redirect_that_would_turn_the_post_into_a_get_is_never_followed(code, recorders):
    front = recorders(code)
    front.location = f"http://127.0.0.1:{front.port}/landing"
    out = client(front.port).generate_each(HI)
    assert isinstance(out[0], HTTPError) and "change the method" in str(out[0])
    assert [p for _, p, _, _ in front.seen] == ["/v1/chat/completions"]


@pytest.mark.parametrize("code", [307, 308])
def test_a_same_origin_307_308_is_followed_with_method_body_and_key(code, recorders):
    front = recorders(code)
    front.location = f"http://127.0.0.1:{front.port}/landing"
    assert client(front.port).generate(HI) == ["ok"]
    (m1, p1, a1, b1), (m2, p2, a2, b2) = front.seen
    assert (m1, p1, m2, p2) == ("POST", "/v1/chat/completions", "POST", "/landing")
    assert a1 == a2 == "Bearer sk-secret" and b1 == b2 and json.loads(b2)["messages"] == HI[0]


def test_a_redirect_loop_ends(recorders):
    front = recorders(307)
    front.location = f"http://127.0.0.1:{front.port}/v1/chat/completions"
    with pytest.raises(HTTPError, match="307"):
        client(front.port).generate(HI)
    assert len(front.seen) <= 12


def test_a_redirected_judgment_is_unknown(recorders):
    target, front = recorders(), recorders(302)
    front.location = f"http://127.0.0.1:{target.port}/verdict"
    rubric = next(r for r in load_split("bench") if any(c.check is None for c in r.criteria))
    judgments = grade_responses([rubric], [{"prompt_id": rubric.id, "response_id": "r1", "response": "x"}],
                                client(front.port), retries=0, progress=False)
    assert all(j.met is None for j in judgments if j.source != "check") and target.seen == []


# ---------------------------------------------------------------------------------------------- bad 200s
class Scripted:
    """A real HTTP server answering HTTP 200 with each of ``replies`` (bytes) in turn, then ``healthy``
    (bytes, or a function of the request body: one server for several kinds of request)."""

    def __init__(self, replies, healthy: bytes):
        self.replies, self.healthy, self.count, self.last_body = list(replies), healthy, 0, None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                server.last_body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                server.count += 1
                reply = server.replies.pop(0) if server.replies else server.healthy
                reply = reply(server.last_body) if callable(reply) else reply
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


BAD_200 = {
    "null content": completion(None),
    "number content": completion(7),
    "list content": completion([{"type": "text", "text": "x"}]),
    "no choices": json.dumps({"id": "c1"}).encode(),
    "empty choices": json.dumps({"choices": []}).encode(),
    "choices not a list": json.dumps({"choices": {"0": {"message": {"content": "x"}}}}).encode(),
    "no message": json.dumps({"choices": [{"text": "x"}]}).encode(),
    "not an object": b"[1, 2]",
    "not JSON": b"<html>gateway</html>",
    "repeated content key": b'{"choices": [{"message": {"content": "yes", "content": "no"}}]}',
    "NaN": b'{"choices": [{"message": {"content": "x"}}], "usage": NaN}',
}


@pytest.fixture
def scripted():
    made = []

    def make(replies, healthy=completion(GRADE)):
        made.append(Scripted(replies, healthy))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("name", sorted(BAD_200))
def test_a_200_without_usable_content_is_a_failure_never_cached(name, scripted, tmp_path):
    server = scripted([BAD_200[name]])
    llm = CachedLLM(OpenAICompatibleLLM(server.url, "m", max_retries=0), tmp_path)
    first = llm.generate_each(HI)
    assert isinstance(first[0], HTTPError) and "malformed chat completion" in str(first[0])
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing cached
    assert llm.generate_each(HI) == [GRADE]  # the next run asks again and gets the answer
    assert llm.generate_each(HI) == [GRADE] and server.count == 2  # the answer is cached


def test_an_empty_string_is_the_models_answer_not_a_failure(scripted, tmp_path):
    """As on the local backends: "" is what the model wrote (cached); only a reply without text fails."""
    server = scripted([completion("")])
    llm = CachedLLM(OpenAICompatibleLLM(server.url, "m", max_retries=0), tmp_path)
    assert llm.generate_each(HI) == [""] and llm.generate_each(HI) == [""] and server.count == 1


def test_a_null_content_is_retried_within_the_run(scripted):
    server = scripted([completion(None), completion(None)])
    assert OpenAICompatibleLLM(server.url, "m", max_retries=2, backoff=0.01).generate(HI) == [GRADE]
    assert server.count == 3


def test_a_null_content_label_is_asked_again_on_the_next_run(scripted, tmp_path):
    answer = json.dumps({"reason": "needs clinical reasoning", "difficulty": 6})
    server = scripted([completion(None)], healthy=completion(answer))
    llm = CachedLLM(OpenAICompatibleLLM(server.url, "m", max_retries=0, concurrency=1), tmp_path / "cache")
    items = [("row-1", "What dose of amoxicillin for a child?"), ("row-2", "Chest pain when climbing stairs?")]
    out = tmp_path / "difficulty.jsonl"
    first = label(items, llm, out, kind="difficulty", progress=False)
    assert first["row-1"]["status"] == "error" and "malformed" in first["row-1"]["error"]
    assert first["row-2"]["status"] == "ok"  # a failed request fails alone
    second = label(items, llm, out, kind="difficulty", progress=False)
    got = {i: (r["status"], r.get("difficulty")) for i, r in second.items()}
    assert got == {"row-1": ("ok", 6), "row-2": ("ok", 6)}
    assert read_results(out)["row-1"]["status"] == "ok" and server.count == 3


def test_a_curation_rerun_against_a_healthy_server_keeps_the_rows(scripted, tmp_path):
    """The issue's case end to end: every label request of the first curation gets HTTP 200 with content
    null; the rows are not labelled (status error, not cached); the re-run labels them all."""
    from conftest import ROOT

    from promedical.core.workspace import Workspace
    from promedical.corpus.config import DataConfig
    from promedical.corpus.ingest import ingest
    from promedical.corpus.step import curate

    def answer(body):
        props = body["response_format"]["json_schema"]["schema"]["properties"]
        if "difficulty" in props:
            return completion(json.dumps({"reason": "needs clinical reasoning", "difficulty": 6}))
        return completion(json.dumps({"category": props["category"]["enum"][0],
                                      "specialty": props["specialty"]["enum"][0]}))

    ingest([str(ROOT / "data" / "samples" / "sharegpt_sample.jsonl")], tmp_path)
    server = scripted([completion(None)] * 1000, healthy=answer)
    cfg = DataConfig(backend="openai", base_url=server.url, model="m", semantic_dedup=False,
                     decontam_embeddings=False, label_chunk=4)
    llm = CachedLLM(OpenAICompatibleLLM(server.url, "m", max_retries=0), Workspace.of(tmp_path).llm_cache)
    first = curate(tmp_path, cfg, progress=False, llm=llm)  # the backend curate builds, without in-run retries
    difficulty = read_results(tmp_path / "data" / "labels" / "difficulty.jsonl")
    assert difficulty and all(r["status"] == "error" for r in difficulty.values())
    assert not list(Workspace.of(tmp_path).llm_cache.rglob("*.json"))  # no failure cached
    server.replies.clear()  # the server is healthy now
    second = curate(tmp_path, cfg, progress=False, llm=llm)
    difficulty = read_results(tmp_path / "data" / "labels" / "difficulty.jsonl")
    assert difficulty and all(r["status"] == "ok" and r["difficulty"] == 6 for r in difficulty.values())
    assert second["stages"][-1]["out"] > first["stages"][-1]["out"]
