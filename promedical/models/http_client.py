"""The HTTP transport of the OpenAI-compatible backend (``models/llm.py`` ``OpenAICompatibleLLM``).

One attempt is one POST with a wall-clock limit: the socket timeout only bounds each read, so a
server that trickles a byte every half second would hold a read loop forever; ``post_once`` also
starts a watchdog that shuts the attempt's sockets down when its time is up (headers, body, TLS
handshake, proxy tunnel and redirects included), and reports that as ``TimeoutError``.

Redirects: only a 307/308 to the same origin (scheme, host, port) is followed, with the same
method, body and headers. Anything else (301/302/303 turn a POST into a body-less GET; another
origin would receive the request, or answer in the server's name) is not followed: the attempt
fails with ``urllib.error.HTTPError`` carrying the 3xx code, and the caller records *unknown*.

The reply must be a chat completion whose ``choices[0].message.content`` is a string, read
as strict JSON (a repeated key, NaN) and at most ``MAX_RESPONSE_BYTES``; anything else is a
``MalformedReply`` (a failure: never cached, asked again on the next run).
"""
from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import partial

from promedical.core.jsonl import loads as strict_loads

MAX_RESPONSE_BYTES = 16 << 20  # a chat completion is read up to 16 MiB, never unbounded
MAX_REDIRECTS = 5


class MalformedReply(ValueError):
    """An HTTP 200 whose body is not a usable chat completion (null content, no choices, not JSON...)."""


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port outside 0-65535: an origin that matches nothing
        return scheme, "?", -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the delta form; capped at 60 s); None if absent or a date."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return min(max(seconds, 0.0), 60.0) if seconds is not None and seconds == seconds else None


class Watchdog:
    """Shuts down every socket an attempt opened once ``seconds`` of wall-clock time have passed.

    ``shutdown`` (not ``close``) wakes a thread blocked in ``recv`` on the same socket, which then sees
    end-of-file; ``fired`` tells the caller that the failure was the deadline, not the server.
    """

    def __init__(self, seconds: float):
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            self._socks.clear()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if not self.fired:
                self._socks.append(sock)
                return
        self._shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:  # the plain socket's shutdown: an SSLSocket's own would drop its state under a reading thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:  # already closed: the attempt ended on its own
            pass


def _connection(base, watchdog: Watchdog, host, **kwargs):
    """An http.client connection whose sockets are registered with the attempt's watchdog."""
    conn = base(host, **kwargs)
    create = conn._create_connection

    def create_and_register(*args, **kw):
        sock = create(*args, **kw)
        watchdog.register(sock)
        return sock

    conn._create_connection = create_and_register
    return conn


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: Watchdog):
        super().__init__()
        self.watchdog = watchdog

    def http_open(self, req):
        return self.do_open(partial(_connection, http.client.HTTPConnection, self.watchdog), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: Watchdog):
        super().__init__()
        self.watchdog = watchdog

    def https_open(self, req):
        return self.do_open(partial(_connection, http.client.HTTPSConnection, self.watchdog), req,
                            context=self._context)


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a 307/308 to the same origin with the same method, body and headers; nothing else.

    A 301/302/303 would turn the POST into a GET without the body, and another origin is not the
    server the request (and its API key) was meant for: either way the reply would not answer the
    request sent, so it is not followed and the 3xx surfaces as an ``HTTPError``.
    """

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if code not in (307, 308) or origin(newurl) != origin(req.full_url):
            return None
        return urllib.request.Request(newurl, data=req.data, headers=dict(req.headers), method=req.get_method(),
                                      origin_req_host=req.origin_req_host, unverifiable=True)


def refused_redirect(exc: urllib.error.HTTPError, url: str) -> str | None:
    """Why a 3xx reply was not followed (None if ``exc`` is not a redirect)."""
    if not 300 <= exc.code < 400:
        return None
    target = (exc.headers.get("Location") if exc.headers else None) or "?"
    why = ("it would change the method to GET" if exc.code in (301, 302, 303) else
           "it leads to another origin" if origin(urllib.parse.urljoin(url, target)) != origin(url) else
           "too many redirects")
    return f"HTTP {exc.code} redirect to {target[:200]!r} not followed ({why}): no answer to the request sent"


def post_once(url: str, data: bytes, headers: dict, seconds: float) -> bytes:
    """POST ``data`` to ``url`` and return the reply body, all within ``seconds`` of wall-clock time.

    Raises ``TimeoutError`` when the time ran out (whatever the socket reported), ``urllib.error.HTTPError``
    for a non-2xx reply or a redirect not followed (its body readable with ``.read()`` until return),
    ``MalformedReply`` for a reply over ``MAX_RESPONSE_BYTES``, and ``OSError``/``URLError`` otherwise.
    """
    if not seconds > 0:
        raise TimeoutError("deadline reached before the request started")
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    watchdog = Watchdog(seconds)
    opener = urllib.request.build_opener(_HTTPHandler(watchdog), _HTTPSHandler(watchdog), SameOriginRedirects())
    started = time.monotonic()
    with watchdog:
        try:
            with opener.open(request, timeout=seconds) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            try:  # read the error's start now, while the watchdog still bounds it
                exc.detail = exc.read(300)
            except (OSError, http.client.HTTPException):
                exc.detail = b""
            if watchdog.fired:
                raise TimeoutError(f"timed out: no complete reply within {seconds:g} s") from None
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if watchdog.fired or time.monotonic() - started >= seconds:
                raise TimeoutError(f"timed out: no complete reply within {seconds:g} s") from None
            if isinstance(exc, OSError):
                raise
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        if watchdog.fired:  # the body ended because its socket was shut: a truncated reply
            raise TimeoutError(f"timed out: no complete reply within {seconds:g} s")
    if len(raw) > MAX_RESPONSE_BYTES:
        raise MalformedReply(f"reply over {MAX_RESPONSE_BYTES} bytes")
    return raw


def completion_text(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat completion; ``MalformedReply`` unless it is a string."""
    try:
        obj = strict_loads(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise MalformedReply(f"reply is not strict JSON: {str(exc)[:200]}") from None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("reply has no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):  # null (e.g. a refusal or a reasoning-only reply), a number, a list
        raise MalformedReply(f"reply's choices[0].message.content is {type(content).__name__}, not text")
    return content  # "" is what the model wrote (as on the local backends), not a transport failure
