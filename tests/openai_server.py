"""A small OpenAI-compatible chat-completions server for the HTTP backend tests.

Runs as a real separate process (stdlib ``ThreadingHTTPServer``) and answers from a real model
through ``TransformersLLM`` (default ``tiny-qwen3``: fast, random weights). It honours
``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``repetition_penalty`` (vLLM's extra body field),
``chat_template_kwargs.enable_thinking`` and ``response_format.json_schema.schema`` (passed on as
``GenParams.json_schema``: constrained decoding). ``GET /stats`` lists the decoding parameters of every
answered request (``params``), so tests check what a client really sent.

Flags for failure tests:
  --fail-first N   answer HTTP 503 to the first N chat requests
  --delay S        sleep S seconds before answering each chat request (timeout and throughput tests)
  --answer TEXT    answer every chat request with TEXT instead of running the model (a client-side
                   throughput benchmark: the latency is --delay alone; the model is still loaded)

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /stats -> {"requests": n, ...},
POST /reset (zero the counters; the --fail-first count starts again).
Once the model is loaded and the socket listens it prints ``READY <port>`` on stdout (``--port 0``
picks a free port, so there is no race between choosing a port and binding it).

    python tests/openai_server.py --port 0 --model tiny-qwen3 --fail-first 2
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class State:
    def __init__(self, llm, fail_first: int, delay: float, answer: str | None = None):
        self.llm, self.fail_first, self.delay, self.answer = llm, fail_first, delay, answer
        self.lock = threading.Lock()  # guards the counters
        self.model_lock = threading.Lock()  # one generation at a time (tokenizers are not thread-safe)
        self.requests = self.failed = self.inflight = self.max_inflight = 0
        self.last_body: dict | None = None
        self.params: list[dict] = []  # decoding parameters of each answered request (last 1000)
        self.model_seconds = 0.0  # time spent generating (the model runs one request at a time)

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "failed": self.failed, "inflight": self.inflight,
                    "max_inflight": self.max_inflight, "last_body": self.last_body, "params": list(self.params),
                    "model_seconds": round(self.model_seconds, 3)}


def make_handler(state: State):
    from promedical.models.llm import GenParams

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep test output quiet
            pass

        def _send(self, code: int, obj: dict) -> None:
            self._leave()  # before the reply: a client may send its next request as soon as it reads this one
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def do_GET(self):
            if self.path == "/stats":
                self._send(200, state.stats())
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": state.llm.model_id, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path == "/reset":  # zero the counters (each failure test starts from a clean count)
                with state.lock:
                    state.requests = state.failed = state.max_inflight = 0
                    state.last_body = None
                    state.params = []
                    state.model_seconds = 0.0
                self._send(200, {"reset": True})
                return
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            with state.lock:
                state.requests += 1
                number = state.requests
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
            self._in_flight = True
            try:
                self._chat(raw, number)
            finally:
                self._leave()

        def _leave(self) -> None:
            """Count this request out of the in-flight total, once."""
            if getattr(self, "_in_flight", False):
                self._in_flight = False
                with state.lock:
                    state.inflight -= 1

        def _chat(self, raw: bytes, number: int) -> None:
            if state.delay:
                time.sleep(state.delay)
            if number <= state.fail_first:
                with state.lock:
                    state.failed += 1
                self._send(503, {"error": {"message": f"warming up (request {number} of {state.fail_first} refused)"}})
                return
            try:
                body = json.loads(raw)
                messages = body["messages"]
                if not isinstance(messages, list) or not messages:
                    raise ValueError("messages must be a non-empty list")
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": {"message": f"bad request: {exc}"}})
                return
            with state.lock:
                state.last_body = body
            fmt = body.get("response_format") or {}
            schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
            thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking")
            try:
                params = GenParams(max_new_tokens=int(body.get("max_tokens") or 256),
                                   temperature=float(body.get("temperature") or 0.0),
                                   top_p=float(body.get("top_p") if body.get("top_p") is not None else 1.0),
                                   seed=int(body.get("seed") or 0),
                                   repetition_penalty=float(body.get("repetition_penalty") or 1.0),
                                   json_schema=schema, enable_thinking=thinking)
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": {"message": f"bad sampling parameter: {exc}"}})
                return
            with state.lock:
                seen = {k: v for k, v in asdict(params).items() if k != "json_schema"}
                state.params = (state.params + [{**seen, "constrained": schema is not None}])[-1000:]
            try:
                if state.answer is not None:
                    text, completion_tokens = state.answer, 0
                else:
                    with state.model_lock:
                        t0 = time.perf_counter()
                        text = state.llm.generate([messages], params)[0]
                        completion_tokens = len(state.llm.tokenizer(text, add_special_tokens=False)["input_ids"])
                        with state.lock:
                            state.model_seconds += time.perf_counter() - t0
            except Exception as exc:  # report, do not crash the server
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            self._send(200, {
                "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", state.llm.model_id),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"completion_tokens": completion_tokens},
            })

    return Handler


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    ap.add_argument("--model", default="tiny-qwen3")
    ap.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N chat requests")
    ap.add_argument("--delay", type=float, default=0.0, help="sleep S seconds before answering each chat request")
    ap.add_argument("--answer", help="answer every chat request with this text instead of running the model")
    args = ap.parse_args(argv)

    from promedical.models.llm import TransformersLLM

    llm = TransformersLLM(args.model)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(State(llm, args.fail_first, args.delay, args.answer)))
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
