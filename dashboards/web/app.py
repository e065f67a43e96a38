"""The built-in live dashboard: a page, a history API and a server-sent event stream.

The supervisor mounts `dashboard_routes(history, control)` on its single HTTP port next to
its control API (docs/INTERFACES.md). Routes:

    GET /                          the page (static/index.html)
    GET /dashboard/static/{file}   its JS/CSS and the vendored uPlot (no CDN)
    GET /api/history?max_points=N  RunHistory.snapshot: every metric downsampled to <= ~N
                                   points per chart, alerts, decisions, checkpoints, ...,
                                   and `coverage` (see with_coverage)
    GET /api/stream?since=SEQ      text/event-stream; each message is `event: batch` with
                                   data [[seq, kind, data], ...] (kinds: event, alert,
                                   decision, checkpoint, state, restart, segment, closed) or
                                   `event: resync` when the client fell behind (reload history)

The page's buttons POST to the supervisor's control API (/api/pause, /api/resume,
/api/rollback, /api/relax, /api/halt, /api/approve) with `Authorization: Bearer TOKEN`;
the token comes from the URL fragment (#token=..., which browsers never send to the
server) or a prompt, and lives in sessionStorage. Nothing here checks tokens: the read
endpoints are public like the supervisor's GET status, the write endpoints are not ours.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from rlguard.dashboards.history import RunHistory

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_POINTS = 800
MAX_POINTS_LIMIT = 20_000
#: How often the stream looks for new updates. Sinks are called from the supervisor's
#: thread, so polling a sequence number is simpler and safer than cross-thread wakeups.
STREAM_POLL_S = 0.2
STREAM_HEARTBEAT_S = 15.0
_GZIP_MIN_BYTES = 4096


def json_safe(obj):
    """Recursively replace NaN/Infinity (not JSON) with their names as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(getattr(obj, "value", obj))


def _dumps(obj) -> str:
    return json.dumps(json_safe(obj), separators=(",", ":"), allow_nan=False)


def _json_response(request: Request, obj, status: int = 200) -> Response:
    body = _dumps(obj).encode()
    headers = {"Cache-Control": "no-store"}
    if len(body) >= _GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        # The routes are mounted on the supervisor's app, so no middleware of ours: compress here.
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(request: Request, status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"query parameter {name}={raw!r} is not an integer; use e.g. {name}={default}") from None
    if not lo <= value <= hi:
        raise ValueError(f"query parameter {name}={value} is out of range; use {lo}..{hi}")
    return value


def dashboard_routes(history: RunHistory, control=None) -> list[BaseRoute]:
    """The dashboard's routes for the supervisor's app.

    history: the RunHistory sink the supervisor feeds.
    control: the supervisor's control API object, or None for a read-only dashboard (the
        page then hides its buttons). The page talks to it over HTTP only, so that token
        checking stays in one place.
    """

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = (STATIC_DIR / name).resolve()
        if STATIC_DIR.resolve() not in path.parents or not path.is_file():
            return _error(request, 404, f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    async def api_history(request: Request) -> Response:
        try:
            max_points = _int_param(request, "max_points", DEFAULT_MAX_POINTS, 16, MAX_POINTS_LIMIT)
        except ValueError as e:
            return _error(request, 400, str(e))
        # Downsampling 100k steps x dozens of metrics takes tens of ms: keep it off the loop.
        snap = await asyncio.to_thread(history.snapshot, max_points)
        snap["control"] = control is not None
        return _json_response(request, with_coverage(snap))

    async def api_stream(request: Request) -> Response:
        try:
            since = _int_param(request, "since", history.seq, 0, 2**62)
        except ValueError as e:
            return _error(request, 400, str(e))
        last_id = request.headers.get("last-event-id", "")
        if last_id:  # the browser reconnecting after a drop: continue where it was
            # An id we sent is a sequence number; anything else (5,000 digits, "²") is a client
            # error, checked before int() (which refuses > 4,300 digits with a ValueError).
            if not (last_id.isascii() and last_id.isdigit() and len(last_id) <= 19 and int(last_id) <= 2**62):
                return _error(request, 400, f"Last-Event-ID {last_id[:40]!r} is not an event id this stream "
                                            "sent (an integer 0..2**62); reconnect without it")
            since = int(last_id)
        return StreamingResponse(
            _stream(history, since),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        Route("/", page, methods=["GET"]),
        Route("/dashboard/static/{name:path}", static, methods=["GET"]),
        Route("/api/history", api_history, methods=["GET"]),
        Route("/api/stream", api_stream, methods=["GET"]),
    ]


def with_coverage(snap: dict) -> dict:
    """Add which failure classes the charted metrics arm (monitors/coverage.py report) to a
    history snapshot. The page shows the supervisor's /api/status coverage when it has one and
    this otherwise (a dashboard without a supervisor, or an older one)."""
    from rlguard.monitors.coverage import report

    snap["coverage"] = report(snap.get("metrics") or {})
    return snap


async def _stream(history: RunHistory, seq: int):
    yield f"retry: 2000\nevent: hello\ndata: {_dumps({'seq': history.seq})}\n\n"
    idle = 0.0
    while True:
        latest, updates = history.updates_since(seq)
        if updates is None:
            yield f"id: {latest}\nevent: resync\ndata: {{}}\n\n"
            seq, idle = latest, 0.0
        elif updates:
            batch = [[s, kind, data] for s, kind, data in updates]
            yield f"id: {latest}\nevent: batch\ndata: {_dumps(batch)}\n\n"
            seq, idle = latest, 0.0
            if any(kind == "closed" for _, kind, _ in updates):
                return
        elif history.closed:
            return  # the run is over: end the response so the server can shut down
        elif idle >= STREAM_HEARTBEAT_S:
            yield ": keep-alive\n\n"  # proxies and the browser drop silent connections
            idle = 0.0
        await asyncio.sleep(STREAM_POLL_S)
        idle += STREAM_POLL_S


def build_app(history: RunHistory, control=None) -> Starlette:
    """A standalone dashboard app (before/without the supervisor, and for tests).

    control: as for dashboard_routes; if it has a `routes` attribute (a list of Starlette
        routes serving the /api/* control endpoints), those are served by this app too.
    """
    routes = list(getattr(control, "routes", None) or []) + dashboard_routes(history, control)
    return Starlette(routes=routes)
