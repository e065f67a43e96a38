"""Security of the control surface and of checkpoint loading.

- the control API listens on loopback unless the config says otherwise on purpose;
- every state change needs the bearer token (401 without it or with a wrong one), compared
  in constant time (hmac.compare_digest, checked in the code);
- the dashboard's buttons cannot be driven cross-site: no cookie auth, a cross-origin form
  POST without the Authorization header is refused, CORS is not opened;
- rollback targets are checkpoint steps of this run, never paths;
- checkpoints are never loaded through unrestricted pickle (no torch.load without
  weights_only=True, no pickle.load, no yaml.load) in any Python file of the repository.
"""

from __future__ import annotations

import ast
import http.client
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rlguard.orchestrator.spec import ConfigError, parse_run_config
from rlguard.orchestrator.state import RunState
from tests.reliability.chaos_lib import REPO, read_jsonl, record

STATE_CHANGING = ["/api/pause", "/api/resume", "/api/rollback", "/api/relax", "/api/halt", "/api/approve",
                  "/api/worker/sync", "/api/worker/heartbeat"]


def request(sup, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
    u = urlparse(sup.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def operator_entries(sup) -> int:
    return sum(1 for e in read_jsonl(sup.files.journal_path) if e["kind"] == "operator")


def test_the_control_api_listens_on_loopback_only(live_supervisor):
    sup = live_supervisor
    assert urlparse(sup.url).hostname == "127.0.0.1"
    assert sup._http._sock.getsockname()[0] == "127.0.0.1"
    info = json.loads((sup.files.run_dir / "supervisor.json").read_text())
    assert info["host"] == "127.0.0.1" and info["port"] == sup.port
    # from this machine's other addresses the port is closed
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("10.255.255.255", 1))  # no packet is sent: just picks the outgoing interface
        own_ip = probe.getsockname()[0]
        probe.close()
    except OSError:
        own_ip = None
    if own_ip and not own_ip.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((own_ip, sup.port), timeout=2).close()


def test_a_non_loopback_address_needs_an_explicit_opt_in():
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ConfigError, match="allow_remote"):
            parse_run_config({"supervisor": {"host": host}})
    assert parse_run_config({"supervisor": {"host": "0.0.0.0", "allow_remote": True}}).supervisor.allow_remote


def test_every_state_change_needs_the_bearer_token(live_supervisor):
    sup = live_supervisor
    token = sup.token
    wrong = [None, "", "Bearer", "Bearer ", f"Bearer {token[:-1]}", f"Bearer {token}x", f"Basic {token}",
             f"Token {token}", f"Bearer {token.upper()}", "Bearer " + "A" * 10_000]
    before = operator_entries(sup)
    tried = 0
    for path in STATE_CHANGING:
        for auth in wrong:
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            status, _, body = request(sup, "POST", path, json.dumps({"to_step": 2}), headers)
            tried += 1
            assert status == 401, (path, auth, status, body[:200])
    assert operator_entries(sup) == before  # nothing reached the supervisor's loop
    assert sup.live.state is RunState.RUNNING
    record("auth", kind="input", name="state-changing requests without / with a wrong bearer token", tried=tried,
           note="test_security.py::test_every_state_change_needs_the_bearer_token",
           refused=tried, crashes=0)


def test_the_token_comparison_is_constant_time():
    """Grep-style: the token check in control_api uses hmac.compare_digest and never == on the token."""
    src = (REPO / "orchestrator" / "control_api.py").read_text()
    tree = ast.parse(src)
    auth = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_authorized")
    calls = {ast.unparse(n.func) for n in ast.walk(auth) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    for path in ["orchestrator", "dashboards"]:
        for f in (REPO / path).rglob("*.py"):
            for n in ast.walk(ast.parse(f.read_text())):
                if isinstance(n, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops):
                    names = {x.id for x in ast.walk(n) if isinstance(x, ast.Name)}
                    attrs = {x.attr for x in ast.walk(n) if isinstance(x, ast.Attribute)}
                    assert not ({"token"} & (names | attrs)), f"{f}:{n.lineno} compares a token with =="


def test_cross_site_requests_cannot_press_the_dashboard_buttons(live_supervisor):
    sup = live_supervisor
    before = operator_entries(sup)
    evil = {"Origin": "http://evil.example", "Referer": "http://evil.example/page"}
    tried = 0
    for path in ["/api/halt", "/api/rollback", "/api/pause", "/api/relax"]:
        # what an HTML form on another site sends: no Authorization, a form body, maybe cookies
        for ctype, body in [("application/x-www-form-urlencoded", "to_step=2&reason=x"),
                            ("text/plain", '{"to_step": 2}'), ("multipart/form-data; boundary=b", "--b--")]:
            status, headers, _ = request(sup, "POST", path, body,
                                         {**evil, "Content-Type": ctype, "Cookie": f"token={sup.token}"})
            tried += 1
            assert status == 401, (path, ctype, status)
            assert "access-control-allow-origin" not in {k.lower() for k in headers}
        # a CORS preflight from another origin is not granted
        status, headers, _ = request(sup, "OPTIONS", path, None, {**evil, "Access-Control-Request-Method": "POST",
                                                                  "Access-Control-Request-Headers": "authorization"})
        tried += 1
        lower = {k.lower(): v for k, v in headers.items()}
        assert "access-control-allow-origin" not in lower and "access-control-allow-headers" not in lower, lower
        assert status >= 400
    for path in ["/", "/api/status", "/api/history", "/metrics"]:
        status, headers, _ = request(sup, "GET", path, None, evil)
        assert "access-control-allow-origin" not in {k.lower() for k in headers}, path
        assert not any(k.lower() == "set-cookie" for k in headers), f"{path} sets a cookie"
    assert operator_entries(sup) == before and sup.live.state is RunState.RUNNING
    record("csrf", kind="input", name="cross-origin form POSTs and CORS preflights against the buttons' endpoints",
           note="test_security.py::test_cross_site_requests_cannot_press_the_dashboard_buttons",
           tried=tried, refused=tried, crashes=0)


ESCAPES = ["../../etc", "/etc/passwd", "../step-000002", "step-000002", "2; rm -rf /", "%2e%2e%2fetc", None, 2.0,
           [2], {"path": "/etc"}, True, -1, 10**30, "", "\x00"]


def test_rollback_targets_that_are_not_a_checkpoint_step_of_this_run_are_refused(live_supervisor):
    sup = live_supervisor
    auth = {"Authorization": f"Bearer {sup.token}", "Content-Type": "application/json"}
    decided_before = sum(1 for e in read_jsonl(sup.files.journal_path) if e.get("phase") == "decided")
    answers = []
    for target in ESCAPES:
        status, _, body = request(sup, "POST", "/api/rollback", json.dumps({"to_step": target}), auth)
        answers.append((target, status))
        assert status in (400, 404), (target, status, body[:200])
        assert "error" in json.loads(body)
    for body in [{"path": "/etc"}, {"path": "../../etc", "to_step": "../../etc"}, {"checkpoint": "/tmp"}]:
        status, _, _ = request(sup, "POST", "/api/rollback", json.dumps(body), auth)
        answers.append((body, status))
        assert status == 400, (body, status)
    decided_after = sum(1 for e in read_jsonl(sup.files.journal_path) if e.get("phase") == "decided")
    assert decided_after == decided_before  # not one of them became a decision
    assert sup.live.state is RunState.RUNNING
    record("rollback_escape", kind="input", name="rollback targets that are paths, traversal or not a step",
           note="test_security.py::test_rollback_targets_that_are_not_a_checkpoint_step_of_this_run_are_refused",
           tried=len(answers), refused=len(answers), crashes=0)


def _calls(tree):
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            yield n, ast.unparse(n.func)


# What may import pickle: this file builds the hostile pickle that weights_only=True must refuse.
PICKLE_IMPORT_ALLOWED = {"tests/reliability/test_security.py"}


def _repo_python_files() -> list[Path]:
    """Every Python file of the repository: examples/, bench/, tests/ too (examples get copied
    into users' code); not the virtual environment, caches or other hidden directories."""
    out = []
    for f in REPO.rglob("*.py"):
        rel = f.relative_to(REPO)
        if any(part.startswith(".") or part in ("__pycache__", "node_modules", "build", "dist")
               for part in rel.parts[:-1]):
            continue
        out.append(f)
    return sorted(out)


def test_checkpoints_are_never_loaded_through_unrestricted_pickle():
    findings = []
    files = _repo_python_files()
    assert {"examples", "ppo", "orchestrator", "bench", "tests"} <= {f.relative_to(REPO).parts[0] for f in files}
    for f in files:
        tree = ast.parse(f.read_text())
        for node, name in _calls(tree):
            where = f"{f.relative_to(REPO)}:{node.lineno}"
            if name.endswith("torch.load"):
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    findings.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load", "numpy.load",
                        "np.load") and not any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                                               and k.value.value is False for k in node.keywords):
                findings.append(f"{where}: {name}")
            if name == "yaml.load" and not any("Safe" in ast.unparse(k.value) for k in node.keywords):
                findings.append(f"{where}: yaml.load without SafeLoader")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(m and m.split(".")[0] in ("pickle", "cPickle", "dill", "shelve") for m in mods) or (
                        isinstance(node, ast.ImportFrom) and node.module == "torch"
                        and any(a.name == "load" for a in node.names)):
                    if f.relative_to(REPO).as_posix() not in PICKLE_IMPORT_ALLOWED:
                        findings.append(f"{f.relative_to(REPO)}:{node.lineno}: imports {mods}")
    assert not findings, "\n".join(findings)


def test_torch_load_with_weights_only_refuses_a_pickle_that_runs_code(tmp_path):
    """The guard the grep relies on: weights_only=True refuses an object that would execute code."""
    torch = pytest.importorskip("torch")
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").write_text, ("ran",))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(Exception):  # noqa: B017 - torch raises UnpicklingError or RuntimeError by version
        torch.load(p, weights_only=True)
    assert not (tmp_path / "pwned").exists()
