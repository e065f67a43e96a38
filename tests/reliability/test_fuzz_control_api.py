"""Fuzz the live supervisor's HTTP API on 127.0.0.1: random methods, paths, bodies (deep and
wide JSON too) and headers (Host, Last-Event-ID among them), with and without the token, and
raw requests whose Content-Length lies. The answer is always a 2xx/4xx (with a JSON error
from our handlers), never a 500, and the supervisor's loop keeps running (state RUNNING, the
worker still training). Once more on 127.0.0.2 with `allow_remote: true`: the Host check is
off there, and the token alone guards every POST."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlparse

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rlguard.orchestrator.control_api import OPERATOR_ACTIONS
from rlguard.orchestrator.http_guard import is_loopback_host_header
from rlguard.orchestrator.state import RunState
from tests.reliability.chaos_lib import read_jsonl, record
from tests.reliability.fuzz_strategies import DEEP_JSON, HOST_VALUES, JSONISH, LAST_EVENT_IDS, WIDE_JSON

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
REMOTE_TALLY = {"tried": 0, "refused": 0, "server_errors": 0}

BODIES = st.one_of(
    st.binary(max_size=300), DEEP_JSON, WIDE_JSON,
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
HEADERS = st.one_of(
    st.dictionaries(st.sampled_from(["Content-Type", "Origin", "X-Forwarded-For", "Cookie", "Accept",
                                     "Content-Encoding", "Transfer-Encoding-X", "Host", "Last-Event-ID"]),
                    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=3),
    st.fixed_dictionaries({}, optional={"Host": HOST_VALUES, "Last-Event-ID": LAST_EVENT_IDS}),
)


def foreign_host(headers: dict) -> bool:
    """A Host header the API refuses (400) on the default loopback supervisor."""
    return "Host" in headers and not is_loopback_host_header(headers["Host"])


def send(sup, method, path, body, headers):
    u = urlparse(sup.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=40)
    try:
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None,
                     headers={k: v.encode("utf-8") for k, v in headers.items()})
        resp = conn.getresponse()
        # an open event stream never ends: its status and headers are the answer
        stream = urlparse(path).path == "/api/stream" and resp.status == 200
        return resp.status, b"" if stream else resp.read()
    finally:
        conn.close()


def sent_kinds(headers: dict, body: bytes | None) -> list[str]:
    """What a request carried that the old fuzzer never sent (counted in the record's note)."""
    body = body or b""
    head = body[:2000]
    kinds = [k for k, h in (("Host", "Host"), ("Last-Event-ID", "Last-Event-ID")) if h in headers]
    if head.count(b"[") + head.count(b"{") > 64:  # more levels than the API allows
        kinds.append("deep JSON")
    if len(body) > 100_000:
        kinds.append("wide JSON")
    return kinds


def check(sup, status, payload, what, tally=TALLY, name="fuzz_control_api", kinds=()):
    tally["tried"] += 1
    for k in kinds:
        tally.setdefault("kinds", {})[k] = tally.get("kinds", {}).get(k, 0) + 1
    tally["refused"] += 400 <= status < 500
    tally["server_errors"] += status >= 500
    if tally["tried"] % 50 == 0:
        _record(sup, tally, name)
    assert status < 500, f"{what} -> {status} {payload[:300]!r}"
    died = sup.test_box.get("error") or ("" if sup.test_thread.is_alive() else "the loop thread ended")
    assert not died, f"{what} killed the supervisor's loop: {died[-800:]}"
    assert sup.live.state is RunState.RUNNING, f"{what} -> supervisor state {sup.live.state}"


def _record(sup, tally=TALLY, name="fuzz_control_api"):
    alive = sup.test_thread.is_alive() and "error" not in sup.test_box
    where = ("on 127.0.0.2 with allow_remote, without the token (Host check off; the token alone guards)"
             if tally is REMOTE_TALLY else "on 127.0.0.1")
    tests = ("test_fuzzed_requests_without_the_token_on_a_remote_bind_change_nothing" if tally is REMOTE_TALLY else
             "test_requests_without_the_token_never_crash_or_change_anything, "
             "test_requests_with_the_token_and_hostile_bodies_get_clear_errors, test_content_length_lies_never_crash, "
             "test_the_live_page_stream_answers_any_last_event_id_without_a_5xx")
    what = ("random method, path, body incl. deep and wide JSON, headers incl. Host and Last-Event-ID"
            + ("" if tally is REMOTE_TALLY else "; with and without the token; lying Content-Length"))
    record(name, kind="input", name=f"fuzzed HTTP requests against a live supervisor {where} ({what})",
           tried=tally["tried"], refused=tally["refused"],
           accepted=tally["tried"] - tally["refused"] - tally["server_errors"] - tally.get("no_answer", 0),
           crashes=tally["server_errors"],
           note=("supervisor alive" if alive else "supervisor loop died")
           + (f"; {tally['no_answer']} with a body announced but never sent got no answer (the client hung up)"
              if tally.get("no_answer") else "")
           + "; of them " + ", ".join(f"{n} {k}" for k, n in sorted(tally.get("kinds", {}).items()))
           + f"; test_fuzz_control_api.py: {tests}")


@FUZZ
@given(method=st.sampled_from(METHODS), path=st.one_of(st.sampled_from(PATHS), st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda p: "/" + p.lstrip("/"))),
       body=BODIES, headers=HEADERS)
@example(method="GET", path="/api/stream", body=b"", headers={"Last-Event-ID": "9" * 5_000})
@example(method="GET", path="/api/status", body=b"", headers={"Host": "attacker.example"})
@example(method="POST", path="/api/halt", body=b"[" * 100_000, headers={})
def test_requests_without_the_token_never_crash_or_change_anything(live_supervisor, method, path, body, headers):
    sup = live_supervisor
    status, payload = send(sup, method, path, body, headers)
    check(sup, status, payload, f"{method} {path} {headers!r:.200}", kinds=sent_kinds(headers, body))
    if method == "POST" and path.startswith("/api/") and path not in ("/api/status", "/api/history"):
        assert status in (401, 404, 405) or (status == 400 and foreign_host(headers)), (method, path, status)
    if "control.token" in path:
        assert sup.token.encode() not in payload, "the token file is served"


@FUZZ
@given(last_id=LAST_EVENT_IDS, since=st.one_of(st.none(), LAST_EVENT_IDS), host=st.one_of(st.none(), HOST_VALUES))
@example(last_id="9" * 5_000, since=None, host=None)
def test_the_live_page_stream_answers_any_last_event_id_without_a_5xx(live_supervisor, last_id, since, host):
    """/api/stream is public (no token): the browser's Last-Event-ID and ?since= are attacker input."""
    sup = live_supervisor
    headers = {"Last-Event-ID": last_id} if last_id else {}
    if host is not None:
        headers["Host"] = host
    path = "/api/stream" + (f"?since={quote(since)}" if since is not None else "")
    status, payload = send(sup, "GET", path, None, headers)
    check(sup, status, payload, f"GET {path[:80]} {headers!r:.200}", kinds=sent_kinds(headers, None))
    sent = last_id.strip(" \t")  # HTTP drops a header value's surrounding blanks
    valid = sent == "" or (sent.isascii() and sent.isdigit() and len(sent) < 20 and int(sent) <= 2**62)
    if status == 200:
        assert valid and not foreign_host(headers), (last_id[:40], headers.get("Host"), status)


@FUZZ
@given(path=st.sampled_from(AUTH_PATHS), body=BODIES, sync_body=st.one_of(SYNC_BODIES, DEEP_JSON, WIDE_JSON),
       headers=HEADERS)
@example(path="/api/worker/sync", body=b"", headers={},
         sync_body=b'{"attempt": 0, "events": [{"step": 5, "metrics": {"kl": 1' + b"0" * 400 + b"}}]}")
@example(path="/api/worker/sync", body=b"", headers={}, sync_body=b'{"attempt": "x"}')
@example(path="/api/worker/sync", body=b"", headers={}, sync_body=b'{"wait_s": "soon"}')
@example(path="/api/rollback", body=b'{"to_step": 2, "skip_batches": "many"}', headers={}, sync_body=b"{}")
@example(path="/api/relax", body=b"[" * 100_000, headers={}, sync_body=b"{}")
@example(path="/api/worker/sync", body=b"", headers={}, sync_body=b'{"events": [' * 5_000)
def test_requests_with_the_token_and_hostile_bodies_get_clear_errors(live_supervisor, path, body, sync_body, headers):
    sup = live_supervisor
    body = sync_body if path.startswith("/api/worker/") else body
    headers = dict(headers, Authorization=f"Bearer {sup.token}")
    status, payload = send(sup, "POST", path, body, headers)
    check(sup, status, payload, f"POST {path} {body[:200]!r}", kinds=sent_kinds(headers, body))
    if status >= 400:
        assert "error" in json.loads(payload), payload[:200]
    if foreign_host(headers):
        assert status == 400, (path, headers, status)


def raw_exchange(sup, data: bytes, half_close: bool) -> bytes:
    """Send raw bytes (a request whose framing may lie), end our side if asked (so a server waiting
    for an announced body sees the end), and read one answer's head."""
    u = urlparse(sup.url)
    with socket.create_connection((u.hostname, u.port), timeout=40) as s:
        out = b""
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            while b"\r\n\r\n" not in out:  # one answer's head is enough
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        return out


def _head(sup, path: str, headers: dict) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{sup.port}", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@FUZZ
@given(path=st.sampled_from(AUTH_PATHS), with_token=st.booleans(), body=st.one_of(BODIES, SYNC_BODIES),
       lie=st.one_of(st.integers(-1_000, 1_000), st.sampled_from([10**12, 10**30, 2**63, 16 << 20, (16 << 20) + 1])),
       form=st.sampled_from(["number", "spaced", "hex", "doubled", "with_chunked", "letters"]))
def test_content_length_lies_never_crash(live_supervisor, path, with_token, body, lie, form):
    """Content-Length that is shorter or longer than the body, negative, huge, doubled, not a
    number, or next to Transfer-Encoding. The answer is a 4xx, or (a body still announced
    when the client has stopped sending) none at all: never a 5xx, and the loop runs on."""
    sup = live_supervisor
    length = len(body) + lie
    value = {"number": str(length), "spaced": f" {length} ", "hex": hex(abs(length)), "letters": "ten",
             "doubled": f"{len(body)}\r\nContent-Length: {length}", "with_chunked": f"{length}\r\n"
             "Transfer-Encoding: chunked"}[form]
    headers = {"Content-Length": value, **({"Authorization": f"Bearer {sup.token}"} if with_token else {})}
    # A body announced longer than sent, or chunked: the server waits for the rest, so end our side.
    waits = lie > 0 or form == "with_chunked"
    answer = raw_exchange(sup, _head(sup, path, headers) + body, half_close=waits)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    if status:
        check(sup, status, answer, f"POST {path} Content-Length: {value!r} body {len(body)} bytes",
              kinds=["lying Content-Length"] if lie or form != "number" else [])
    else:  # no answer: the server waited for the announced body until we closed; still alive
        assert waits, (path, value, len(body), answer[:200])
        TALLY["tried"] += 1
        TALLY["no_answer"] = TALLY.get("no_answer", 0) + 1
        TALLY.setdefault("kinds", {})["lying Content-Length"] = TALLY.get("kinds", {}).get("lying Content-Length", 0) + 1
        assert sup.test_thread.is_alive() and sup.live.state is RunState.RUNNING


def test_zz_record_the_tally(live_supervisor):
    _record(live_supervisor)
    assert "error" not in live_supervisor.test_box, live_supervisor.test_box["error"][-800:]
    assert live_supervisor.test_thread.is_alive()


# ------------------------------------------------- allow_remote on 127.0.0.2: the token alone guards

POSTS = [f"/api/{a}" for a in OPERATOR_ACTIONS] + ["/api/worker/sync", "/api/worker/heartbeat"]
WRONG_AUTH = [None, "", "Bearer", "Basic {token}", "Bearer {token}x", "Bearer {short}", "Bearer " + "A" * 5_000]


def operator_entries(sup) -> int:
    return sum(1 for e in read_jsonl(sup.files.journal_path) if e["kind"] == "operator")


def test_allow_remote_binds_127_0_0_2_and_serves_any_host_name(remote_supervisor):
    sup = remote_supervisor
    assert sup._http._sock.getsockname()[0] == "127.0.0.2" and urlparse(sup.url).hostname == "127.0.0.2"
    info = json.loads((sup.files.run_dir / "supervisor.json").read_text())
    assert info["host"] == "127.0.0.2" and info["url"] == sup.url  # says where it really listens
    for host in ("127.0.0.2", f"127.0.0.2:{sup.port}", "trainer.example", "attacker.example"):
        status, payload = send(sup, "GET", "/api/status", b"", {"Host": host})
        assert status == 200, (host, status, payload[:200])


def test_with_allow_remote_the_token_still_guards_every_post(remote_supervisor):
    """Real requests on the non-loopback bind: every POST endpoint, foreign Host names, no or a
    wrong token: 401 and nothing journaled; the right token is obeyed (so the 401s are the token's)."""
    sup = remote_supervisor
    before = operator_entries(sup)
    tried = 0
    for path in POSTS:
        for auth in WRONG_AUTH:
            for host in ("127.0.0.2", "trainer.example"):
                headers = {"Host": host}
                if auth is not None:
                    headers["Authorization"] = auth.format(token=sup.token, short=sup.token[:-1])
                status, payload = send(sup, "POST", path, b'{"to_step": 2, "reason": "remote"}', headers)
                tried += 1
                assert status == 401, (path, auth, host, status, payload[:200])
    assert operator_entries(sup) == before and sup.live.state is RunState.RUNNING and sup.test_thread.is_alive()
    status, payload = send(sup, "POST", "/api/relax", b'{"reason": "remote test"}',
                           {"Host": "trainer.example", "Authorization": f"Bearer {sup.token}"})
    assert status in (200, 202, 409), (status, payload[:300])  # reached the supervisor: it answered on its merits
    assert operator_entries(sup) == before + 1
    record("auth_remote", kind="input", name="POSTs without / with a wrong token on 127.0.0.2 with allow_remote "
           "(foreign Host names)", tried=tried, refused=tried, crashes=0,
           note="test_fuzz_control_api.py::test_with_allow_remote_the_token_still_guards_every_post")


@settings(FUZZ, max_examples=60)
@given(method=st.sampled_from(["POST", "PUT", "DELETE", "PATCH"]), path=st.sampled_from(POSTS), body=BODIES,
       headers=HEADERS)
def test_fuzzed_requests_without_the_token_on_a_remote_bind_change_nothing(remote_supervisor, method, path, body,
                                                                          headers):
    sup = remote_supervisor
    before = operator_entries(sup)
    status, payload = send(sup, method, path, body, headers)
    check(sup, status, payload, f"{method} {path}", REMOTE_TALLY, "fuzz_control_api_remote",
          kinds=sent_kinds(headers, body))
    assert status in (401, 405), (method, path, headers, status, payload[:200])
    assert operator_entries(sup) == before


def test_zz_record_the_remote_tally(remote_supervisor):
    _record(remote_supervisor, REMOTE_TALLY, "fuzz_control_api_remote")
    assert remote_supervisor.test_thread.is_alive()
