"""One generation interface, three backends: transformers (default), vLLM (GPU) and any
OpenAI-compatible HTTP endpoint. Every backend takes chat messages and optional JSON-schema
constraints and returns text; ``CachedLLM`` adds an on-disk cache keyed by prompt + model + params.
"""
from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from promedical.core.files import write_json
from promedical.models.http_client import MalformedReply, completion_text, post_once, refused_redirect, retry_after


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0
    json_schema: dict | None = None  # constrain the output to this JSON schema
    enable_thinking: bool | None = None  # Qwen3's thinking switch; None leaves the template default


class LLM:
    """Base class: ``generate(list of message lists, params) -> list of texts``.

    ``generate_each`` returns one text *or exception* per prompt, so a caller can keep the answers
    that came back and mark only the failed ones as failed (the judge's UNKNOWN). ``parallelism`` is
    how many requests the backend runs at once: callers hand it batches at least that large.
    """

    model_id: str = "?"
    parallelism: int = 1

    def generate(self, prompts: list[list[dict]], params: GenParams = GenParams()) -> list[str]:
        raise NotImplementedError

    def generate_each(self, prompts: list[list[dict]], params: GenParams = GenParams()) -> list[str | Exception]:
        try:
            texts = list(self.generate(prompts, params))
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: every item carries the error
            return [exc] * len(prompts)
        if len(texts) != len(prompts):
            error = BackendError(f"the backend returned {len(texts)} texts for {len(prompts)} prompts")
            return [error] * len(prompts)
        return texts


class ItemwiseLLM(LLM):
    """A backend that answers prompt by prompt (``generate_each``); ``generate`` raises the first failure."""

    def generate(self, prompts, params=GenParams()):
        out = self.generate_each(prompts, params)
        for item in out:
            if isinstance(item, Exception):
                raise item
        return out


def batch_size_for(llm: LLM, batch_size: int) -> int:
    """How many prompts to hand a backend per call: ``batch_size`` for a local model (memory bound);
    at least four times the concurrency for a remote one, so its requests stay in flight."""
    parallel = int(getattr(llm, "parallelism", 1) or 1)
    return batch_size if parallel <= 1 else max(batch_size, 4 * parallel)


class TransformersLLM(LLM):
    """Local generation with transformers; JSON-schema constraints through an xgrammar logits processor."""

    def __init__(self, model_spec: str = "embedded", *, model=None, tokenizer=None, batch_size: int = 4):
        from promedical.models.loading import load_model

        if model is None:
            model, tokenizer = load_model(model_spec)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.model_id = model_spec
        self._grammars: dict[str, object] = {}

    def _grammar(self, schema: dict):
        import xgrammar as xgr

        # Keep the schema's own property order: xgrammar emits properties in that order, and a sorted
        # copy would make the model write e.g. "bonus" before "proficiency" (unlike the few-shot examples).
        key = json.dumps(schema)
        if key not in self._grammars:
            eos = self.model.generation_config.eos_token_id
            stop = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size,
                                                      stop_token_ids=stop)
            self._grammars[key] = xgr.GrammarCompiler(info).compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def generate(self, prompts, params=GenParams()):
        import torch
        from transformers import LogitsProcessorList

        from promedical.models.loading import chat_prompt

        tok = self.tokenizer
        tok.padding_side = "left"
        texts = [chat_prompt(tok, m, enable_thinking=params.enable_thinking) for m in prompts]
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            inputs = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            processors = LogitsProcessorList()
            if params.json_schema is not None:
                import xgrammar as xgr

                processors.append(xgr.contrib.hf.LogitsProcessor(self._grammar(params.json_schema)))
            sampling = (dict(do_sample=True, temperature=params.temperature, top_p=params.top_p)
                        if params.temperature > 0 else dict(do_sample=False))
            torch.manual_seed(params.seed + start)
            with torch.no_grad():
                gen = self.model.generate(**inputs, max_new_tokens=params.max_new_tokens, logits_processor=processors,
                                          repetition_penalty=params.repetition_penalty, **sampling)
            new = gen[:, inputs["input_ids"].shape[1]:]
            out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        return out


class VLLMLLM(LLM):
    """Offline batched generation with vLLM (GPU only; ``pip install -e .[gpu]``)."""

    parallelism = 256  # the engine batches what one call hands it: callers hand it >= 4 x this (batch_size_for)

    def __init__(self, model_spec: str, **engine_kwargs):
        try:
            from vllm import LLM as Engine
        except ImportError as exc:
            raise ImportError("the vllm backend needs a GPU and the optional extra: pip install -e .[gpu]") from exc
        from promedical.models.loading import resolve

        self.model_id = model_spec
        self.engine = Engine(model=resolve(model_spec), **engine_kwargs)

    def generate(self, prompts, params=GenParams()):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=params.json_schema) if params.json_schema else None
        sp = SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                            seed=params.seed, repetition_penalty=params.repetition_penalty,
                            structured_outputs=structured)
        kwargs = {} if params.enable_thinking is None else {"chat_template_kwargs": {"enable_thinking": params.enable_thinking}}
        results = self.engine.chat(prompts, sp, use_tqdm=True, **kwargs)
        return [r.outputs[0].text.strip() for r in results]


class BackendError(RuntimeError):
    """A backend could not produce an answer (server down, timeout, malformed reply): retry later."""


class HTTPError(BackendError):
    pass


class RateLimiter:
    """At most ``rate`` request starts per second across threads (evenly spaced); None = unlimited."""

    def __init__(self, rate: float | None):
        if rate is not None and not rate > 0:
            raise ValueError(f"rate limit must be > 0 requests per second, got {rate!r}")
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, deadline: float | None = None) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if deadline is not None and slot > deadline:
            raise TimeoutError("the rate limit would start this request after its deadline")
        if slot > now:
            time.sleep(slot - now)


class OpenAICompatibleLLM(ItemwiseLLM):
    """Chat completions over HTTP (a vLLM server, a hosted model) with bounded concurrency, a rate
    limit, retries with jittered exponential backoff (honouring Retry-After) and a wall-clock deadline.

    ``timeout`` bounds one attempt and ``deadline`` the whole request, retries included, both in
    wall-clock seconds (a server that trickles bytes cannot stretch them: see ``models/http_client.py``).
    ``deadline=None`` means ``DEFAULT_DEADLINE`` (or ``timeout``, if larger): every request of every
    stage that uses this backend ends in bounded time. Only a 307/308 to the same origin is followed;
    any other redirect, a reply over 16 MiB, or a 200 whose ``content`` is not text (null, missing)
    is a failure (never cached, asked again on the next run), never an answer.

    Decoding parameters are the same as on the local backends: ``repetition_penalty`` goes as the
    extra body field vLLM's OpenAI server accepts (sent only when it is not the neutral 1.0, so a
    hosted API that rejects unknown fields still works for the default); ``seed``, ``top_p``,
    ``max_tokens`` and the JSON schema (``response_format``) always go.
    """

    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
    DEFAULT_DEADLINE = 600.0  # seconds per request, retries included, when no deadline is given
    MAX_SECONDS = 604_800  # a week: the longest timeout or deadline (a timer cannot wait forever)

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 4, backoff: float = 1.0,
                 rate_limit: float | None = None, deadline: float | None = None):
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= self.MAX_SECONDS):
                raise ValueError(f"{name} must be a number of seconds in (0, {self.MAX_SECONDS}], got {value!r}")
        self.base_url, self.model_id = base_url.rstrip("/"), model
        self.api_key, self.concurrency, self.timeout = api_key, concurrency, float(timeout)
        self.max_retries, self.backoff = max_retries, backoff
        self.deadline = float(deadline) if deadline is not None else max(self.DEFAULT_DEADLINE, self.timeout)
        self.limiter = RateLimiter(rate_limit)

    @property
    def parallelism(self) -> int:
        return self.concurrency

    def _body(self, messages, params: GenParams) -> dict:
        body = {"model": self.model_id, "messages": messages, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM's extra sampling field
        if params.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": params.json_schema, "strict": True}}
        if params.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": params.enable_thinking}
        return body

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url, data = f"{self.base_url}/chat/completions", json.dumps(body).encode()
        last, attempt = None, 0
        deadline = time.monotonic() + self.deadline
        for attempt in range(self.max_retries + 1):
            retry_wait = None
            try:
                self.limiter.wait(deadline)
                raw = post_once(url, data, headers, min(self.timeout, deadline - time.monotonic()))
                return completion_text(raw)
            except urllib.error.HTTPError as exc:
                redirect = refused_redirect(exc, url)
                last = redirect or f"HTTP {exc.code}: {getattr(exc, 'detail', b'')!r}"
                retry_wait = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                if redirect or exc.code not in self.RETRY_STATUS:
                    break
            except MalformedReply as exc:
                last = f"malformed chat completion: {exc}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.max_retries:
                pause = self.backoff * 2 ** attempt * (0.5 + random.random() / 2)
                pause = max(pause, retry_wait or 0.0)
                if time.monotonic() + pause >= deadline:
                    last = f"{last} (deadline of {self.deadline:g} s reached)"
                    break
                time.sleep(pause)
        raise HTTPError(f"{self.base_url}: request failed after {attempt + 1} attempt(s): {last}")

    def generate_each(self, prompts, params=GenParams()):
        def one(messages):
            try:
                return self._post(self._body(messages, params))
            except Exception as exc:  # noqa: BLE001 - reported per item
                return exc

        if not prompts:
            return []
        with ThreadPoolExecutor(min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(one, prompts))


class CachedLLM(ItemwiseLLM):
    """Wraps any backend with an on-disk cache: a re-run with the same prompt, model and params is free."""

    def __init__(self, inner: LLM, cache_dir: str | Path):
        self.inner, self.cache_dir = inner, Path(cache_dir)
        self.model_id = inner.model_id
        self.hits = self.misses = 0

    @property
    def parallelism(self) -> int:
        return self.inner.parallelism

    def key(self, messages, params: GenParams) -> str:
        # no sort_keys: a JSON schema's property order is part of the request (it orders the output)
        payload = json.dumps({"model": self.model_id, "messages": messages, "params": asdict(params)})
        return hashlib.sha256(payload.encode()).hexdigest()

    def generate_each(self, prompts, params=GenParams()):
        """Cached answers are read; the rest asked; only answers (never failures) are cached."""
        keys = [self.key(m, params) for m in prompts]
        out: dict[int, str | Exception] = {}
        for i, k in enumerate(keys):
            path = self.cache_dir / k[:2] / f"{k}.json"
            if path.is_file():
                out[i] = json.loads(path.read_text(encoding="utf-8"))["text"]
        todo = [i for i in range(len(prompts)) if i not in out]
        self.hits += len(prompts) - len(todo)
        self.misses += len(todo)
        if todo:
            for i, text in zip(todo, self.inner.generate_each([prompts[i] for i in todo], params)):
                out[i] = text
                if not isinstance(text, Exception):
                    write_json(self.cache_dir / keys[i][:2] / f"{keys[i]}.json", {"text": text, "model": self.model_id})
        return [out[i] for i in range(len(prompts))]


def make_llm(backend: str = "transformers", model: str = "embedded", *, cache_dir: str | Path | None = None,
             base_url: str | None = None, **kwargs) -> LLM:
    """Build a backend by name: 'transformers' | 'vllm' | 'openai' (needs base_url)."""
    if backend == "transformers":
        llm: LLM = TransformersLLM(model, **kwargs)
    elif backend == "vllm":
        llm = VLLMLLM(model, **kwargs)
    elif backend == "openai":
        if not base_url:
            raise ValueError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
        llm = OpenAICompatibleLLM(base_url, model, **kwargs)
    else:
        raise ValueError(f"unknown backend {backend!r}: expected transformers, vllm or openai")
    return CachedLLM(llm, cache_dir) if cache_dir else llm
