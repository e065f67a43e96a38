"""Operator control over the real HTTP API: tokens, pause/resume, rollback, halt, approve."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from rlguard.orchestrator import control_cli
from rlguard.orchestrator.run_files import read_supervisor_info, read_token
from rlguard.orchestrator.state import ExitCode, RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import fake_config, journal, metric_steps, story


def _start(sup: Supervisor) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("result", sup.run()), daemon=True)
    t.start()
    return t, out


def _wait(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _status(run_dir) -> dict:
    url = read_supervisor_info(run_dir)["url"]
    with urllib.request.urlopen(url + "/api/status", timeout=5) as r:
        return json.loads(r.read())


def _post(run_dir, path, body=None, token=None) -> int:
    url = read_supervisor_info(run_dir)["url"]
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=json.dumps(body or {}).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _finish(sup, t, out, timeout=60):
    t.join(timeout)
    if t.is_alive():
        sup.detach("test timeout")
        t.join(10)
        if sup.live.worker:
            sup.live.worker.stop(1)
        raise AssertionError("supervisor did not finish")
    return out["result"]


def test_control_api_requires_the_token_and_steers_the_run(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 2000, "step_s": 0.02, "checkpoint_every": 2})
    sup = Supervisor(run_dir, cfg)
    t, out = _start(sup)
    try:
        _wait(lambda: (run_dir / "supervisor.json").exists() and (_status(run_dir).get("step") or 0) >= 8,
              what="step 8")
        assert oct((run_dir / "control.token").stat().st_mode & 0o777) == "0o600"
        token = read_token(run_dir)
        # no token, wrong token, wrong scheme: 401; the worker channel is guarded too
        assert _post(run_dir, "/api/pause") == 401
        assert _post(run_dir, "/api/pause", token="not-the-token") == 401
        assert _post(run_dir, "/api/halt", token="") == 401
        assert _post(run_dir, "/api/worker/sync", {"attempt": 0, "events": []}) == 401
        assert _status(run_dir)["state"] == "running"

        assert control_cli.pause_main([str(run_dir)]) == 0
        assert _status(run_dir)["state"] == "paused"
        n = len(metric_steps(run_dir))
        time.sleep(0.6)  # the worker blocks at its next boundary: at most one more step
        assert len(metric_steps(run_dir)) <= n + 1
        assert control_cli.resume_main([str(run_dir)]) == 0
        _wait(lambda: len(metric_steps(run_dir)) > n + 3, what="training resumed")

        # rollback targets must be known checkpoints; bodies are validated
        assert _post(run_dir, "/api/rollback", {"to_step": 999999}, token=token) == 404
        assert _post(run_dir, "/api/rollback", {"to_step": "../../etc"}, token=token) == 400
        assert _post(run_dir, "/api/approve", {"decision_id": "d-1", "approve": True}, token=token) == 404
        assert control_cli.rollback_main([str(run_dir), "--to", "4"]) == 0
        _wait(lambda: any(e["kind"] == "decision" and e["phase"] == "done" and e["action"] == "rollback"
                          for e in journal(run_dir)), what="operator rollback done")
        _wait(lambda: (1, 5) in metric_steps(run_dir), what="attempt 1 from step 5")

        assert control_cli.halt_main([str(run_dir), "--reason", "test over"]) == 0
        result = _finish(sup, t, out)
    finally:
        if t.is_alive():
            sup.detach("cleanup")
    assert result.state is RunState.HALTED and result.exit_code is ExitCode.HALTED
    decisions = [e for e in journal(run_dir) if e["kind"] == "decision" and e["phase"] == "decided"]
    assert [d["decision"]["reason"] for d in decisions] == ["operator rollback to step 4", "operator halt: test over"]
    ops = [e["command"] for e in journal(run_dir) if e["kind"] == "operator"]
    # the rollback to "../../etc" was a bad body (400): refused before the journal
    assert ops == ["pause", "resume", "rollback", "approve", "rollback", "halt"]
    assert story(run_dir)[-1] == ("state", "halted")


def test_approve_mode_pauses_until_an_operator_approves(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 12, "checkpoint_every": 2, "faults": {"0": {"nan_at": 7}}},
                      policies={"modes": {"rollback": "approve"}, "approval": {"timeout_s": 120}})
    sup = Supervisor(run_dir, cfg)
    t, out = _start(sup)
    try:
        pending = _wait(lambda: (run_dir / "supervisor.json").exists() and _status(run_dir).get("approval"),
                        what="approval request")
        assert pending["decision"]["action"] == "rollback" and _status(run_dir)["state"] == "paused"
        assert _post(run_dir, "/api/approve", {"decision_id": pending["decision_id"], "approve": True}) == 401
        assert control_cli.approve_main([str(run_dir)]) == 0
        result = _finish(sup, t, out)
    finally:
        if t.is_alive():
            sup.detach("cleanup")
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    assert [x for x in story(run_dir) if x[0] == "decision" or x == ("state", "paused")] == [
        ("decision", "rollback", "decided"), ("state", "paused"), ("decision", "rollback", "done")]
    assert metric_steps(run_dir)[7] == (1, 5)


def test_approval_timeout_applies_the_configured_rule(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 8, "checkpoint_every": 2, "faults": {"0": {"nan_at": 7}}},
                      policies={"modes": {"rollback": "approve"}, "approval": {"timeout_s": 0.3, "on_timeout": "deny"}})
    sup = Supervisor(run_dir, cfg)
    result = _finish(sup, *_start(sup))
    assert result.state is RunState.COMPLETED and result.rollbacks == 0
    denied = [e for e in journal(run_dir) if e["kind"] == "decision" and e["phase"] == "denied"]
    assert denied and denied[0]["outcome"]["message"] == "denied by timeout"
