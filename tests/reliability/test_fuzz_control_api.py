"""Fuzz the live supervisor's HTTP API on 127.0.0.1: random methods, paths, bodies and headers,
with and without the token. The answer is always a 2xx/4xx with a JSON error, never a 500,
and the supervisor's loop keeps running (state RUNNING, the worker still training)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.state import RunState
from tests.reliability.chaos_lib import record
from tests.reliability.fuzz_strategies import JSONISH

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
PATHS = ["/api/status", "/api/pause", "/api/resume", "/api/rollback", "/api/relax", "/api/halt", "/api/approve",
         "/api/worker/sync", "/api/worker/heartbeat", "/api/history", "/api/stream", "/metrics", "/",
         "/dashboard/static/../../control.token", "/dashboard/static/%2e%2e/%2e%2e/control.token", "/api/",
         "/api/status/../halt", "//api/halt", "/api/halt?x=1", "/nope"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
# Authenticated fuzzing leaves out what legitimately ends or freezes the run (halt, pause).
AUTH_PATHS = ["/api/rollback", "/api/relax", "/api/approve", "/api/resume", "/api/worker/sync",
              "/api/worker/heartbeat"]
TALLY = {"tried": 0, "refused": 0, "server_errors": 0}

BODIES = st.one_of(
    st.binary(max_size=300),
    JSONISH.map(lambda o: json.dumps(o, allow_nan=True).encode()),
    st.fixed_dictionaries({}, optional={"to_step": JSONISH, "skip_batches": JSONISH, "decision_id": JSONISH,
                                        "approve": JSONISH, "reason": JSONISH, "source": JSONISH}).map(
        lambda o: json.dumps(o, allow_nan=True).encode()),
)
SYNC_BODIES = st.fixed_dictionaries({}, optional={
    "attempt": JSONISH, "step": JSONISH, "status": JSONISH, "wait_s": JSONISH, "paused": JSONISH,
    "progress_age_s": JSONISH, "acks": st.lists(JSONISH, max_size=3), "checkpoints": st.lists(JSONISH, max_size=3),
    "events": st.lists(st.one_of(JSONISH, st.fixed_dictionaries({"step": JSONISH, "metrics": JSONISH})), max_size=3),
}).map(lambda o: json.dumps(o, allow_nan=True).encode())
HEADERS = st.dictionaries(st.sampled_from(["Content-Type", "Origin", "X-Forwarded-For", "Cookie", "Accept",
                                           "Content-Encoding", "Transfer-Encoding-X", "Host"]),
                          st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=3)


def send(sup, method, path, body, headers):
    u = urlparse(sup.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=40)
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None, headers=headers)
        resp = conn.getresponse()
        payload = resp.read() if path != "/api/stream" else b""
        return resp.status, payload
    finally:
        conn.close()


def check(sup, status, payload, what):
    TALLY["tried"] += 1
    TALLY["refused"] += 400 <= status < 500
    TALLY["server_errors"] += status >= 500
    if TALLY["tried"] % 50 == 0:
        _record(sup)
    assert status < 500, f"{what} -> {status} {payload[:300]!r}"
    died = sup.test_box.get("error") or ("" if sup.test_thread.is_alive() else "the loop thread ended")
    assert not died, f"{what} killed the supervisor's loop: {died[-800:]}"
    assert sup.live.state is RunState.RUNNING, f"{what} -> supervisor state {sup.live.state}"


def _record(sup):
    alive = sup.test_thread.is_alive() and "error" not in sup.test_box
    record("fuzz_control_api", kind="input", name="fuzzed HTTP requests against a live supervisor (random method, "
           "path, body, headers; with and without the token)", tried=TALLY["tried"], refused=TALLY["refused"],
           accepted=TALLY["tried"] - TALLY["refused"] - TALLY["server_errors"], crashes=TALLY["server_errors"],
           note="supervisor alive" if alive else "supervisor loop died")


@FUZZ
@given(method=st.sampled_from(METHODS), path=st.one_of(st.sampled_from(PATHS), st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda p: "/" + p.lstrip("/"))),
       body=BODIES, headers=HEADERS)
def test_requests_without_the_token_never_crash_or_change_anything(live_supervisor, method, path, body, headers):
    sup = live_supervisor
    if path == "/api/stream" and method == "GET":
        return  # server-sent events: an endless response by design
    status, payload = send(sup, method, path, body, headers)
    check(sup, status, payload, f"{method} {path}")
    if method == "POST" and path.startswith("/api/") and path not in ("/api/status", "/api/history"):
        assert status in (401, 404, 405), (method, path, status)
    if "control.token" in path:
        assert sup.token.encode() not in payload, "the token file is served"


@FUZZ
@given(path=st.sampled_from(AUTH_PATHS), body=BODIES, sync_body=SYNC_BODIES, headers=HEADERS)
@example(path="/api/worker/sync", body=b"", headers={},
         sync_body=b'{"attempt": 0, "events": [{"step": 5, "metrics": {"kl": 1' + b"0" * 400 + b"}}]}")
@example(path="/api/worker/sync", body=b"", headers={}, sync_body=b'{"attempt": "x"}')
@example(path="/api/worker/sync", body=b"", headers={}, sync_body=b'{"wait_s": "soon"}')
@example(path="/api/rollback", body=b'{"to_step": 2, "skip_batches": "many"}', headers={}, sync_body=b"{}")
def test_requests_with_the_token_and_hostile_bodies_get_clear_errors(live_supervisor, path, body, sync_body, headers):
    sup = live_supervisor
    body = sync_body if path.startswith("/api/worker/") else body
    headers = dict(headers, Authorization=f"Bearer {sup.token}")
    status, payload = send(sup, "POST", path, body, headers)
    check(sup, status, payload, f"POST {path} {body[:200]!r}")
    if status >= 400:
        assert "error" in json.loads(payload), payload[:200]


def test_zz_record_the_tally(live_supervisor):
    _record(live_supervisor)
    assert "error" not in live_supervisor.test_box, live_supervisor.test_box["error"][-800:]
    assert live_supervisor.test_thread.is_alive()
