"""The supervisor's one HTTP port: worker channel, operator control API, and mounted extras.

    GET  /api/status              public: state, step, alerts, constraints, checkpoints
    POST /api/worker/sync         worker: events, checkpoint notices, acks -> commands
    POST /api/worker/heartbeat    worker: liveness
    POST /api/pause | /api/resume | /api/relax | /api/halt
    POST /api/rollback            {"to_step": N}
    POST /api/approve             {"decision_id": "...", "approve": true|false}

Every POST needs `Authorization: Bearer <RUN/control.token>` (compared in constant time);
without it: 401. Dashboards add their pages (`/`, `/metrics`, ...) through `extra_routes`.
Every route, theirs too, serves loopback Host values only unless allow_remote, and forbids
framing (orchestrator/http_guard.py). A body is read up to MAX_BODY_BYTES (413 from its
Content-Length, or as soon as a chunked body passes it) and may nest MAX_JSON_DEPTH deep.
Served by uvicorn on a thread; handlers hand work to the supervisor's loop and never run
monitors or policies themselves.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from typing import Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rlguard.orchestrator.http_guard import HostGuard

log = logging.getLogger("rlguard.control_api")

OPERATOR_ACTIONS = ("pause", "resume", "rollback", "relax", "halt", "approve")
MAX_BODY_BYTES = 16 << 20
#: Real bodies nest 4 deep (sync -> events -> event -> metrics); far deeper ones are hostile, and
#: one near the interpreter's recursion limit would fail later in a json.dumps of the journal.
MAX_JSON_DEPTH = 64


class ControlTarget(Protocol):
    """What the HTTP layer needs from the supervisor (all thread-safe)."""

    def status(self) -> dict: ...
    def worker_sync(self, body: dict) -> dict: ...
    def worker_heartbeat(self, body: dict) -> None: ...
    def operator(self, action: str, body: dict) -> tuple[int, dict]: ...


class _JSONResponse(JSONResponse):
    def render(self, content) -> bytes:  # NaN/Infinity pass through as METRICS.md spells them
        return json.dumps(content, allow_nan=True, default=str).encode()


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _unauthorized() -> Response:
    return _JSONResponse({"error": "missing or wrong bearer token: send 'Authorization: Bearer <RUN/control.token>'"},
                         status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _depth_exceeds(obj, limit: int) -> bool:
    """True when containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > limit:
            return True
        children = o.values() if isinstance(o, dict) else o
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _too_large() -> Response:
    return _JSONResponse({"error": f"request body too large (limit {MAX_BODY_BYTES} bytes)"}, status_code=413)


async def _json_body(request: Request) -> dict | Response:
    # Refuse from the announced length before reading anything, and count a chunked body as it
    # streams in: a hostile body is never buffered beyond the limit.
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 12 or int(length) > MAX_BODY_BYTES):
        return _too_large()
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _too_large()
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-body (e.g. a Content-Length that lied)
        return _JSONResponse({"error": "request body incomplete: the client disconnected"}, status_code=400)
    raw = b"".join(chunks)
    if not raw:
        return {}
    too_deep = _JSONResponse({"error": f"request body is nested more than {MAX_JSON_DEPTH} deep"}, status_code=400)
    try:
        body = json.loads(raw)
    except RecursionError:
        return too_deep
    except ValueError:
        return _JSONResponse({"error": "request body is not JSON"}, status_code=400)
    if isinstance(body, (dict, list)) and _depth_exceeds(body, MAX_JSON_DEPTH):
        return too_deep
    if not isinstance(body, dict):
        return _JSONResponse({"error": "request body must be a JSON object"}, status_code=400)
    return body


def _int_ok(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _num_ok(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0


def worker_body_problem(body: dict, heartbeat: bool = False) -> str | None:
    """What is wrong with a worker's sync/heartbeat body (None: nothing). The loop trusts
    these fields, so hostile or buggy input is refused here with a 400 naming the field."""
    if "attempt" in body and not _int_ok(body["attempt"]):
        return "'attempt' must be an integer >= 0"
    if body.get("step") is not None and not _int_ok(body["step"]):
        return "'step' must be an integer >= 0 or null"
    if heartbeat:
        if body.get("progress_age_s") is not None and not _num_ok(body["progress_age_s"]):
            return "'progress_age_s' must be a number >= 0 or null"
        return None
    if "wait_s" in body and not _num_ok(body["wait_s"]):
        return "'wait_s' must be a number of seconds >= 0"
    if "status" in body and not isinstance(body["status"], str):
        return "'status' must be a string"
    for name in ("events", "checkpoints", "acks"):
        items = body.get(name, [])
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            return f"'{name}' must be a list of objects"
    for c in body.get("checkpoints", []):
        if not _int_ok(c.get("step")) or not isinstance(c.get("path"), str):
            return "each checkpoint must be {\"step\": int >= 0, \"path\": str}"
    for a in body.get("acks", []):
        if not isinstance(a.get("command_id"), str) or (a.get("step") is not None and not _int_ok(a.get("step"))):
            return "each ack must be {\"command_id\": str, \"ok\": bool, \"detail\": str, \"step\": int|null}"
    return None


def build_app(target: ControlTarget, token: str, extra_routes: list[BaseRoute] | None = None,
              allow_remote: bool = False) -> Starlette:
    """The app; `allow_remote` (supervisor.allow_remote) serves Host values other than loopback."""
    async def status(request: Request) -> Response:
        return _JSONResponse(await run_in_threadpool(target.status))

    async def worker_sync(request: Request) -> Response:
        if not _authorized(request, token):
            return _unauthorized()
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        problem = worker_body_problem(body)
        if problem:
            return _JSONResponse({"error": f"bad worker sync: {problem}"}, status_code=400)
        # Waits (bounded by the worker's wait_s) until the loop processed the events. A target
        # with an async variant saves a thread hop per step (it matters on a loaded machine).
        native = getattr(target, "worker_sync_async", None)
        if native is not None:
            return _JSONResponse(await native(body))
        return _JSONResponse(await run_in_threadpool(target.worker_sync, body))

    async def worker_heartbeat(request: Request) -> Response:
        if not _authorized(request, token):
            return _unauthorized()
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        problem = worker_body_problem(body, heartbeat=True)
        if problem:
            return _JSONResponse({"error": f"bad heartbeat: {problem}"}, status_code=400)
        target.worker_heartbeat(body)
        return _JSONResponse({"ok": True})

    def operator_endpoint(action: str):
        async def handler(request: Request) -> Response:
            if not _authorized(request, token):
                return _unauthorized()
            body = await _json_body(request)
            if isinstance(body, Response):
                return body
            code, reply = await run_in_threadpool(target.operator, action, body)
            return _JSONResponse(reply, status_code=code)

        return handler

    routes: list[BaseRoute] = [
        Route("/api/status", status, methods=["GET"]),
        Route("/api/worker/sync", worker_sync, methods=["POST"]),
        Route("/api/worker/heartbeat", worker_heartbeat, methods=["POST"]),
    ]
    routes += [Route(f"/api/{a}", operator_endpoint(a), methods=["POST"]) for a in OPERATOR_ACTIONS]
    routes += list(extra_routes or [])
    return Starlette(routes=routes, middleware=[Middleware(HostGuard, allow_remote=allow_remote)])


class ControlServer:
    """uvicorn on a daemon thread, on a socket we bind first (so port 0 yields a known port)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: small JSON replies on kept-alive connections must not
        # wait for the client's delayed ACK (Nagle), which costs ~40 ms per request.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port = self._sock.getsockname()[1]
        # log_config=None: uvicorn's loggers propagate to ours (one format, the logger named),
        # warnings and errors only; no access log.
        config = uvicorn.Config(app, log_level="warning", log_config=None, lifespan="off", access_log=False,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="rlguard-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except Exception:  # the run continues without a control API; status says so
            log.exception("control API server stopped")

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"control API did not start on {self.url}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        try:
            self._sock.close()
        except OSError:
            pass
