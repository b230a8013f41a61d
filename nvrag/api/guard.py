"""The API's door: what a request must be before any route sees it. ASGI middleware, outermost first:

- ``BrowserGuard``: the API is safe beside a browser. The Host header must name this server (the bound address,
  loopback names for a loopback bind, and ``--allowed-host`` names), which defeats DNS rebinding; a
  state-changing request (POST, PUT, PATCH, DELETE) that carries a foreign ``Origin`` is refused, which defeats
  cross-site writes (for the web page at /ui, and for ``nvrag ui``, any request with a foreign ``Origin``: Gradio
  would answer a page on any localhost port with CORS); and the JSON routes (``/v1/...``) take only
  ``application/json`` bodies, so an HTML form (``text/plain``, urlencoded, multipart: the bodies a page may send
  without asking) never reaches them.
- ``KeyRequired``: with an API key, every route but the probes needs it, checked before the body is read.
- ``Admission``: requests that send work (POST, PUT, PATCH, DELETE) are bounded in number and body bytes in
  flight; past a bound the answer is an immediate 429 with ``Retry-After``. Bodies must announce their length
  (411), stay under the limit (413) and arrive in time (408).

Probes (``/health``, ``/live``, ``/ready``) and ``/metrics`` pass every bound but the Host check: they never
wait behind model work.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nvrag.api.errors import error_body
from nvrag.api.limits import (
    BODY_IDLE_SECONDS,
    BODY_TOTAL_SECONDS,
    DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
    DEFAULT_MAX_IN_FLIGHT,
    MAX_BODY_BYTES,
)

PROBES = frozenset({"/health", "/live", "/ready"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODIES = frozenset({"POST", "PUT", "PATCH"})


def _is_page(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, kind: str, code: str, **headers: str
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # policy violation
        return
    await JSONResponse(error_body(message, kind, code), status, headers=headers or None)(scope, receive, send)


def host_name(value: str) -> str:
    """The host of a Host header or an origin's netloc, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(bound: str, extra: Iterable[str]) -> frozenset[str] | None:
    """The Host names a server bound to ``bound`` answers: None (any) for a wildcard bind without
    ``--allowed-host``, else the bound name, its loopback aliases and the extra names."""
    names = {host_name(h) for h in extra if h.strip()}
    if "*" in names:
        return None
    bound = host_name(bound)
    if bound in ("0.0.0.0", "::", ""):
        return frozenset(names) if names else None
    names.add(bound)
    if bound in LOOPBACK_NAMES:
        names |= LOOPBACK_NAMES
    return frozenset(names)


class BrowserGuard:
    """Host check, foreign-Origin refusal for writes (for every request to the web page: /ui, or every route
    when ``page`` says the whole app is the page, as for `nvrag ui`) and JSON-only bodies on /v1; see the module."""

    def __init__(
        self, app: ASGIApp, hosts: frozenset[str] | None, origins: frozenset[str] = frozenset(), page: bool = False
    ) -> None:
        self.app, self.hosts, self.origins, self.page = app, hosts, origins, page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if self.hosts is not None and host_name(host) not in self.hosts:
            shown = host[:100] or "(none)"
            message = (
                f"Host {shown!r} is not served here; this server answers {', '.join(sorted(self.hosts))} "
                "(start it with --allowed-host NAME to add a name)"
            )
            await _refuse(scope, receive, send, 421, message, "invalid_request_error", "host_not_allowed")
            return
        method = scope.get("method", "GET")
        origin = _header(scope, b"origin")
        page = self.page or _is_page(scope["path"])  # its reads too: Gradio answers any localhost page with CORS
        guarded = page or scope["type"] == "websocket" or method in WRITES
        if guarded and origin is not None and not self._same_origin(origin, host):
            message = (
                f"a request from the web page at {origin[:100]!r} may not change or read this server "
                "(start it with --allowed-origin ORIGIN to allow that page)"
            )
            await _refuse(scope, receive, send, 403, message, "permission_error", "cross_origin")
            return
        if method in BODIES and scope["path"].startswith("/v1/"):
            media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if media != "application/json":
                message = f"send the body as JSON with Content-Type: application/json (got {media[:60] or 'none'})"
                await _refuse(scope, receive, send, 415, message, "invalid_request_error", "unsupported_media_type")
                return
        await self.app(scope, receive, send)

    def _same_origin(self, origin: str, host: str) -> bool:
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host.lower()


class KeyRequired:
    """With a key, every request but the probes needs it, checked before the body is read (an unauthenticated
    client learns nothing of the routes): programs send ``Authorization: Bearer KEY``; a browser on the web page
    (/ui, and only there) sends it as the password of HTTP Basic auth, which the 401 there asks for. Basic is
    not taken elsewhere: a browser replays Basic credentials by itself, so it must not open the JSON routes.
    Compared in constant time."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app, self.key = app, key

    def _problem(self, header: str, page: bool) -> tuple[str, str] | None:
        assert self.key is not None
        scheme, _, value = header.partition(" ")
        token = value.strip()
        if scheme.lower() == "basic" and token and page:
            try:
                token = base64.b64decode(token, validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                token = ""
        elif scheme.lower() != "bearer":
            token = ""
        if not token:
            return "missing API key: send Authorization: Bearer KEY", "no_key"
        if not secrets.compare_digest(token.encode(), self.key.encode()):
            return "invalid API key", "invalid_api_key"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] in ("http", "websocket") and scope["path"] not in PROBES:
            page = _is_page(scope["path"])
            problem = self._problem(_header(scope, b"authorization") or "", page)
            if problem is not None:
                challenge = 'Basic realm="nvrag", charset="UTF-8"' if page else "Bearer"
                await _refuse(
                    scope, receive, send, 401, problem[0], "authentication_error", problem[1],
                    **{"WWW-Authenticate": challenge},
                )  # fmt: skip
                return
        await self.app(scope, receive, send)


class BodyTimeout(HTTPException):
    """A request body that did not arrive in time (408); raised from ``receive`` inside the route."""

    def __init__(self) -> None:
        super().__init__(408, f"the request body did not arrive within {BODY_TOTAL_SECONDS:.0f} s; send it whole")


class Admission:
    """Bounds on requests that start work (see the module): in flight at once, body bytes in flight, one body's
    size and its arrival time. The web page (/ui) bounds its own uploads (ten files of 20 MB) and is exempt
    from the body rules, not from the count."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_bytes_in_flight: int = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_in_flight, self.max_body_bytes, self.max_bytes_in_flight = (
            max_in_flight,
            max_body_bytes,
            max_bytes_in_flight,
        )
        self.on_refused = on_refused
        self.in_flight = 0
        self.bytes_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        # reads (GET, HEAD, OPTIONS) start no model work, and some are long-lived streams (MCP's and the page's
        # event streams) that would hold a slot for minutes: only requests that send work are counted
        if scope["type"] != "http" or scope["method"] not in WRITES or path in PROBES or path == "/metrics":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        declared = 0
        if method in BODIES and not _is_page(path):
            length = _header(scope, b"content-length")
            if length is None:
                await _refuse(
                    scope, receive, send, 411, "send a Content-Length header with the request body",
                    "invalid_request_error", "length_required",
                )  # fmt: skip
                return
            if not length.isdigit() or int(length) > self.max_body_bytes:
                await _refuse(
                    scope, receive, send, 413, f"the request body is over {self.max_body_bytes} bytes",
                    "invalid_request_error", "request_too_large",
                )  # fmt: skip
                return
            declared = int(length)
        busy = None
        if self.in_flight >= self.max_in_flight:
            busy = ("requests", f"{self.in_flight} requests are being answered (the limit is {self.max_in_flight})")
        elif declared and self.bytes_in_flight + declared > self.max_bytes_in_flight:
            busy = ("bytes", f"{self.bytes_in_flight} bytes of request bodies are in flight")
        if busy is not None:
            if self.on_refused is not None:
                self.on_refused(busy[0])
            await _refuse(
                scope, receive, send, 429, f"{busy[1]}; retry in a second", "rate_limit_error", "too_many_requests",
                **{"Retry-After": "1"},
            )  # fmt: skip
            return
        self.in_flight += 1  # one event loop: no lock needed between the check and the count
        self.bytes_in_flight += declared
        try:
            await self.app(scope, self._timed(receive) if declared else receive, send)
        finally:
            self.in_flight -= 1
            self.bytes_in_flight -= declared

    @staticmethod
    def _timed(receive: Receive) -> Receive:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TOTAL_SECONDS
        finished = False

        async def timed() -> Message:
            nonlocal finished
            if finished:  # the body is in: what follows is waiting for a disconnect, which has no deadline
                return await receive()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(left, BODY_IDLE_SECONDS)))
            except TimeoutError:
                raise BodyTimeout() from None
            finished = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return timed
