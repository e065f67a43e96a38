"""What a hostile web page or a hostile request still must not do to the supervisor's port.

- DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 sends
  `Host: attacker.example`; only loopback Host values are served (unless allow_remote).
- Clickjacking: every response forbids framing (X-Frame-Options, CSP frame-ancestors).
- The live page's stream: a Last-Event-ID that is not a small integer is a 400, not a 500.
- The control API's body: deep JSON is a 400; an oversized body is refused from its
  Content-Length (or, chunked, as soon as it passes the limit), never buffered whole.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
from urllib.parse import urlparse

import pytest

from rlguard.orchestrator.control_api import MAX_BODY_BYTES
from rlguard.orchestrator.state import RunState
from tests.reliability.chaos_lib import read_jsonl, record


def request(sup, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
    """(status, headers, body); an open event stream (200 on /api/stream) is not read: it never ends."""
    u = urlparse(sup.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"" if (path == "/api/stream" and resp.status == 200) else resp.read()
    finally:
        conn.close()


#: requests sent by the tests below, recorded at the end of the module (test_zz_record_the_tally)
TALLY = {"last_event_id": 0, "deep_json": 0, "oversized": 0}


def operator_entries(sup) -> int:
    return sum(1 for e in read_jsonl(sup.files.journal_path) if e["kind"] == "operator")


FOREIGN_HOSTS = ["attacker.example", "attacker.example:{port}", "127.0.0.1.attacker.example",
                 "localhost.attacker.example:{port}", "127.0.0.2:{port}", "0.0.0.0:{port}", "192.0.2.7",
                 "[::1].attacker.example", "[::2]:{port}", "127.0.0.1:{port}@attacker.example", "127.0.0.1:x",
                 "localhost:", ""]
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "LocalHost:{port}", "[::1]",
                  "[::1]:{port}"]


def test_a_foreign_host_header_is_refused_on_every_route(live_supervisor):
    """DNS rebinding: the browser sends the attacker's name as Host; nothing is served to it."""
    sup = live_supervisor
    before = operator_entries(sup)
    auth = {"Authorization": f"Bearer {sup.token}", "Content-Type": "application/json"}
    tried = 0
    for raw in FOREIGN_HOSTS:
        host = raw.format(port=sup.port)
        for method, path, body, extra in [("GET", "/api/status", None, {}), ("GET", "/", None, {}),
                                          ("GET", "/api/history", None, {}), ("GET", "/metrics", None, {}),
                                          ("GET", "/api/stream", None, {}),
                                          ("POST", "/api/relax", b"{}", auth)]:
            status, headers, payload = request(sup, method, path, body, {"Host": host, **extra})
            tried += 1
            assert status == 400, (host, method, path, status, payload[:200])
            error = json.loads(payload)["error"]
            assert "Host" in error and "allow_remote" in error, error
            assert str(sup.files.run_dir) not in payload.decode(), "the run directory leaked to a foreign page"
    for raw in LOOPBACK_HOSTS:
        status, _, payload = request(sup, "GET", "/api/status", None, {"Host": raw.format(port=sup.port)})
        assert status == 200, (raw, status, payload[:200])
    assert operator_entries(sup) == before and sup.live.state is RunState.RUNNING
    record("dns_rebinding", kind="input", name="requests with a foreign Host header (DNS rebinding), "
           "on the API and the live page", tried=tried, refused=tried, crashes=0,
           note="test_http_hardening.py::test_a_foreign_host_header_is_refused_on_every_route")


def test_every_response_forbids_framing(live_supervisor):
    sup = live_supervisor
    for method, path, headers in [("GET", "/", {}), ("GET", "/api/status", {}), ("GET", "/api/history", {}),
                                  ("POST", "/api/halt", {}), ("GET", "/nope", {}),
                                  ("GET", "/api/status", {"Host": "attacker.example"})]:
        status, got, _ = request(sup, method, path, b"" if method == "POST" else None, headers)
        assert got.get("x-frame-options") == "DENY", (path, status, got)
        assert "frame-ancestors 'none'" in got.get("content-security-policy", ""), (path, status, got)


@pytest.mark.parametrize("last_id", ["9" * 5000, "1" * 25, "\u00b2", "\u0661\u0662", "-1", "1e3", "0x10", "5 5"])
def test_a_last_event_id_that_is_not_a_small_integer_is_a_400(live_supervisor, last_id):
    """5,000 digits used to be a 500 with a traceback (int() refuses > 4,300 digits), no token needed."""
    sup = live_supervisor
    status, _, payload = request(sup, "GET", "/api/stream", None, {"Last-Event-ID": last_id.encode("utf-8")})
    TALLY["last_event_id"] += 1
    assert status == 400, (last_id[:20], status, payload[:300])
    assert "Last-Event-ID" in json.loads(payload)["error"]


def test_a_valid_last_event_id_still_resumes_the_stream(live_supervisor):
    sup = live_supervisor
    u = urlparse(sup.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", "/api/stream", headers={"Last-Event-ID": "3"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("content-type", "").startswith("text/event-stream")
        assert resp.readline().startswith(b"retry:")  # the stream is open; do not wait for more
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/api/relax", "/api/worker/sync", "/api/worker/heartbeat"])
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a": ' * 100_000, b"[" * 200 + b"]" * 200,
                                  b'{"reason": ' + b"[" * 500 + b"]" * 500 + b"}"])
def test_deeply_nested_json_is_a_400(live_supervisor, path, body):
    """`[` x 100,000 used to be a 500 (RecursionError); nesting that parses but is deeper than any
    real body is refused too, so no later json.dumps (journal, sinks) can hit the recursion limit."""
    sup = live_supervisor
    auth = {"Authorization": f"Bearer {sup.token}", "Content-Type": "application/json"}
    status, _, payload = request(sup, "POST", path, body, auth)
    TALLY["deep_json"] += 1
    assert status == 400, (path, body[:20], status, payload[:300])
    assert "nested" in json.loads(payload)["error"]
    assert sup.live.state is RunState.RUNNING and sup.test_thread.is_alive()


def _raw_post(sup, head: bytes, body: bytes, timeout: float = 30.0) -> bytes:
    """Send the request head, then the body in 64 KiB pieces until the server answers; returns
    the answer's head (a server that waits for the whole body is caught by the timeout)."""
    u = urlparse(sup.url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(head)
        data, sent = b"", 0
        try:
            while b"\r\n\r\n" not in data:
                readable, _, _ = select.select([s], [], [], 0 if sent < len(body) else timeout)
                if readable:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                elif sent < len(body):
                    s.sendall(body[sent:sent + 65536])
                    sent += 65536
                else:
                    break
        except OSError:  # the server closed the connection after answering: keep what came
            pass
        return data


def test_an_oversized_body_is_refused_from_its_content_length_before_it_is_sent(live_supervisor):
    """200 MB announced: the 413 comes after 1 MB, so the server did not wait to buffer the rest."""
    sup = live_supervisor
    head = (f"POST /api/relax HTTP/1.1\r\nHost: 127.0.0.1:{sup.port}\r\nAuthorization: Bearer {sup.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {200_000_000}\r\n\r\n").encode()
    answer = _raw_post(sup, head, b" " * (1 << 20))
    TALLY["oversized"] += 1
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_chunked_body_is_cut_off_at_the_limit(live_supervisor):
    """No Content-Length (chunked): the body is counted while it streams in; past the limit: 413."""
    sup = live_supervisor
    head = (f"POST /api/relax HTTP/1.1\r\nHost: 127.0.0.1:{sup.port}\r\nAuthorization: Bearer {sup.token}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * (1 << 20)
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(MAX_BODY_BYTES // len(chunk) + 1))
    answer = _raw_post(sup, head, body)
    TALLY["oversized"] += 1
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sup.live.state is RunState.RUNNING


def test_zz_record_the_tally(live_supervisor):
    """Runs last in the module: the counts of the tests above (all refused, or they failed)."""
    rows = [("last_event_id", "Last-Event-ID values that are not an event id (5,000 digits, 25 digits, '\u00b2', "
             "'-1', ...) on the live page's stream, no token", "test_a_last_event_id_that_is_not_a_small_integer_is_a_400"),
            ("deep_json", "deeply nested JSON bodies with the token ([ x 100,000; 200 and 500 levels that parse)",
             "test_deeply_nested_json_is_a_400"),
            ("oversized", "oversized bodies with the token (200 MB announced; chunked past 16 MiB)",
             "test_an_oversized_body_is_refused_from_its_content_length_before_it_is_sent, "
             "test_a_chunked_body_is_cut_off_at_the_limit")]
    for key, name, test in rows:
        if TALLY[key]:
            record(f"http_{key}", kind="input", name=name, tried=TALLY[key], refused=TALLY[key], crashes=0,
                   note=f"test_http_hardening.py::{test}")
    assert live_supervisor.test_thread.is_alive()
