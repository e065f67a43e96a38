"""`rlguard watch`: a recorded collapse appended line by line to a file is detected, decided,
carried out by real subprocess hooks, and journaled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rlguard.orchestrator.journal import read_journal
from rlguard.orchestrator.spec import ConfigError
from rlguard.orchestrator.watch import HookRunner, parse_hooks
from rlguard.policies.decision import Action, Decision
from tests.monitors.monitor_streams import collapse, events, healthy_stream

REPO = Path(__file__).resolve().parents[2]


def _collapse_lines(n: int = 130, onset: int = 100) -> list[str]:
    rows = collapse(healthy_stream(n, seed=3, extra=("entropy", "distinct_2")), onset=onset)
    return [ev.to_json() + "\n" for ev in events(rows, t0=time.time(), dt=0.001)]


def _watch(tmp: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlguard.orchestrator.cli", "watch", str(tmp / "metrics.jsonl"),
                             "--out", str(tmp / "watch"), "--poll-s", "0.05", "--checkpoint-every", "20", "-q",
                             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _append_slowly(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        for line in lines:
            f.write(line)
            f.flush()
            time.sleep(0.002)


def test_watch_detects_collapse_runs_rollback_hook_and_journals(tmp_path):
    marker = tmp_path / "rollback.json"
    env_file = tmp_path / "rollback.env"
    hook = f"cat > {marker}; echo $RLGUARD_ACTION $RLGUARD_TARGET_STEP $RLGUARD_DECISION_ID > {env_file}"
    proc = _watch(tmp_path, "--until-idle", "2", "--hook", f"rollback={hook}", "--hook", "notify=exit 7")
    time.sleep(0.5)  # the file does not exist yet: watch waits for it
    lines = _collapse_lines()
    _append_slowly(tmp_path / "metrics.jsonl", lines[:60])
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a torn write: half a line, then the rest
        f.write(lines[60][:20])
        f.flush()
        time.sleep(0.2)
        f.write(lines[60][20:])
        f.write("this is not json\n")
    _append_slowly(tmp_path / "metrics.jsonl", lines[61:])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out

    decision = json.loads(marker.read_text())  # the hook got the decision on stdin
    assert decision["action"] == "rollback" and decision["step"] > 100
    action, target, did = env_file.read_text().split()
    assert action == "rollback" and int(target) < 100 and int(target) % 20 == 0  # an assumed checkpoint step
    assert did == decision["decision_id"]

    entries = read_journal(tmp_path / "watch" / "journal.jsonl").entries
    alerts = [e for e in entries if e["kind"] == "alert"]
    assert any(e["alert"]["severity"] == "critical" and e["alert"]["onset_step"] >= 95 for e in alerts)
    assert all(e["step"] >= 95 for e in alerts)  # nothing before the collapse: no false alarm
    outcomes = {e["decision_id"]: e for e in entries if e["kind"] == "decision" and e["phase"] != "decided"}
    assert outcomes[did]["phase"] == "done" and "exited 0" in outcomes[did]["outcome"]["message"]
    failed = [e for e in outcomes.values() if e["action"] == "notify"]
    assert failed and all(e["phase"] == "failed" and "exited 7" in e["outcome"]["message"] for e in failed)
    notes = [e for e in entries if e["kind"] == "note"]
    assert any(e.get("event") == "bad_event" and e["lineno"] == 62 for e in notes)  # reported, not fatal
    assert notes[-1]["event"] == "watch_stopped" and notes[-1]["events"] == len(lines)


def test_watch_stops_on_sigterm_and_halt_hook_ends_with_code_3(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(_collapse_lines(40)))
    proc = _watch(tmp_path, "--port", "0")
    info_file = tmp_path / "watch" / "supervisor.json"
    for _ in range(200):
        if info_file.exists() and "watch stopped" not in (tmp_path / "watch" / "journal.jsonl").read_text():
            break
        time.sleep(0.05)
    url = json.loads(info_file.read_text())["url"]
    for _ in range(100):  # until all 40 lines are read
        status = json.loads(urllib.request.urlopen(url + "/api/status", timeout=5).read())
        if status["events"] == 40:
            break
        time.sleep(0.05)
    assert status["mode"] == "watch" and status["step"] == 40 and status["state"] == "watching"
    exposition = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    assert "rlguard_" in exposition  # the supervisor's exporter, fed by watch
    token = (tmp_path / "watch" / "control.token").read_text().strip()
    req = urllib.request.Request(url + "/api/rollback", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 409  # watch observes; it cannot roll somebody else's trainer back
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    notes = [e for e in read_journal(tmp_path / "watch" / "journal.jsonl").entries if e["kind"] == "note"]
    assert notes[-1]["message"] == "watch stopped: signal" and notes[-1]["events"] == 40

    # A halt policy with a halt hook: watch carries it out and exits 3 (halted).
    cfg = tmp_path / "halt.yaml"
    cfg.write_text("policies:\n  rollback: {when_no_healthy_checkpoint: halt}\n")
    metrics2 = tmp_path / "m2.jsonl"
    metrics2.write_text("".join(_collapse_lines(130)))
    halted = tmp_path / "halted"
    proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "watch", str(metrics2), "--config", str(cfg),
                           "--out", str(tmp_path / "w2"), "--checkpoint-every", "1000", "--until-idle", "1",
                           "--poll-s", "0.05", "-q", "--hook", f"halt=touch {halted}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert halted.exists()


def test_bad_hooks_and_config_are_usage_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown action 'restart'"):
        parse_hooks(["restart=foo"])
    with pytest.raises(ConfigError, match="ACTION=COMMAND"):
        parse_hooks(["rollback"])
    assert parse_hooks(["halt=kill -TERM 123"]) == {"halt": "kill -TERM 123"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitors:\n  track: {warmup_steps: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "watch", str(tmp_path / "m.jsonl"),
                           "--config", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "warmup_steps" in proc.stderr


def test_hook_gets_the_decision_and_a_hung_hook_is_killed_with_its_children(tmp_path):
    d = Decision(Action.TIGHTEN, 42, "kl drifting", params={"kl_coef": 0.075})
    runner = HookRunner({"tighten": "echo $RLGUARD_ACTION $RLGUARD_STEP $RLGUARD_PARAMS; cat"}, {}, timeout_s=10)
    phase, outcome = runner.run(d, "d-000007")
    assert phase == "done"
    assert 'tighten 42 {"kl_coef": 0.075}' in outcome and '"decision_id": "d-000007"' in outcome
    hung = HookRunner({"tighten": f"sleep 60 & echo $! > {tmp_path / 'bg.pid'}; wait"}, {}, timeout_s=0.5)
    phase, outcome = hung.run(d, "d-000008")
    assert phase == "failed" and "timed out after 0.5 s" in outcome
    bg = int((tmp_path / "bg.pid").read_text())
    for _ in range(100):  # the grandchild died with its group (a zombie until init reaps it counts as dead)
        if not _alive(bg):
            break
        time.sleep(0.05)
    assert not _alive(bg)
    assert HookRunner({}, {}).run(d, "d-9")[0] == "skipped"
    assert HookRunner({}, {}).run(Decision(Action.NOTIFY, 1, "x"), "d-10")[0] == "done"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
