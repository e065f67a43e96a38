"""The journal: exact contents, torn-line recovery, reopen-and-append, pending decisions."""

from __future__ import annotations

import json

import pytest

from rlguard.monitors.alerts import Alert, Severity
from rlguard.orchestrator.journal import Journal, JournalError, read_journal
from rlguard.policies.decision import Action, Decision
from rlguard.policies.engine import PolicyEngine
from rlguard.policies.view import CheckpointView, RunView

ALERT = Alert("pattern_collapse", "collapse", "kl", 431, Severity.CRITICAL, 418, "kl 0.31")
ROLLBACK = Decision(
    Action.ROLLBACK,
    431,
    "critical ...: rollback to step 400",
    400,
    {"kl_coef": 0.075},
    0,
    "auto",
    ("pattern_collapse",),
)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_scripted_sequence_writes_exactly_these_lines(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path, clock=lambda: 1000.0) as j:
        j.state("running", previous="starting", reason="worker up")
        j.alert(ALERT)
        did = j.decided(ROLLBACK, alerts=[ALERT], constraints={"kl_coef": 0.05}, target={"step": 400})
        j.finished(did, "done", {"restored_step": 400})
        j.checkpoint(400, "checkpoints/step-000400", "healthy")
        j.operator("pause", {"reason": "look"}, source="api")
        j.restart("worker exited with code -9", attempt=1)
    assert did == "d-000003"
    assert lines(path) == [
        {
            "seq": 1,
            "time": 1000.0,
            "kind": "state",
            "state": "running",
            "previous": "starting",
            "reason": "worker up",
        },
        {"seq": 2, "time": 1000.0, "kind": "alert", "step": 431, "alert": ALERT.to_dict()},
        {
            "seq": 3,
            "time": 1000.0,
            "kind": "decision",
            "phase": "decided",
            "decision_id": "d-000003",
            "source": "policy",
            "step": 431,
            "decision": ROLLBACK.to_dict(),
            "inputs": {
                "alerts": [ALERT.to_dict()],
                "constraints": {"kl_coef": 0.05},
                "target": {"step": 400},
            },
        },
        {
            "seq": 4,
            "time": 1000.0,
            "kind": "decision",
            "phase": "done",
            "decision_id": "d-000003",
            "action": "rollback",
            "step": 431,
            "outcome": {"restored_step": 400},
        },
        {
            "seq": 5,
            "time": 1000.0,
            "kind": "checkpoint",
            "step": 400,
            "path": "checkpoints/step-000400",
            "health": "healthy",
        },
        {
            "seq": 6,
            "time": 1000.0,
            "kind": "operator",
            "command": "pause",
            "args": {"reason": "look"},
            "source": "api",
        },
        {"seq": 7, "time": 1000.0, "kind": "restart", "reason": "worker exited with code -9", "attempt": 1},
    ]


def test_reopen_appends_with_continuing_seq_and_finds_pending_decisions(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        done = j.decided(ROLLBACK)
        j.finished(done, "done")
        pending = j.decided(Decision(Action.TIGHTEN, 440, "tighten", params={"kl_coef": 0.1}))
    with Journal(path) as j:
        assert [e["decision_id"] for e in j.pending_decisions()] == [pending]
        assert j.last_seq == 3
        j.finished(pending, "failed", "worker did not acknowledge")
        assert j.pending_decisions() == []
        e = j.note("resumed")
        assert e["seq"] == 5
    entries = read_journal(path).entries
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[3]["outcome"] == {"message": "worker did not acknowledge"}


def test_torn_last_line_is_reported_ignored_and_terminated_before_appending(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        did = j.decided(ROLLBACK)
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "kind": "decision", "phase": "do')  # crash mid-write
    r = read_journal(path)
    assert r.torn_tail and [e["seq"] for e in r.entries] == [1]
    assert r.bad_lines[0][0] == 2 and "torn last line" in r.bad_lines[0][1]

    with Journal(path) as j:
        assert j.recovered.torn_tail
        assert [e["decision_id"] for e in j.pending_decisions()] == [did]  # the torn outcome never happened
        j.finished(did, "done")
    r = read_journal(path)
    assert not r.torn_tail
    assert [(e["seq"], e.get("phase")) for e in r.entries] == [(1, "decided"), (2, "done")]
    assert len(r.bad_lines) == 1 and "unreadable line" in r.bad_lines[0][1]  # the old fragment, now mid-file


def test_misuse_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        did = j.decided(ROLLBACK)
        with pytest.raises(ValueError, match="not one of"):
            j.finished(did, "ok")
        with pytest.raises(JournalError, match="no 'decided' entry"):
            j.finished("d-999999", "done")
        j.finished(did, "denied", "operator said no")
        with pytest.raises(JournalError, match="already ended \\(denied\\)"):
            j.finished(did, "done")
        with pytest.raises(JournalError, match="another process"):
            Journal(path)
        with pytest.raises(ValueError, match="journal kind"):
            j.append("gossip")
    with pytest.raises(JournalError, match="closed"):
        j.note("after close")


def test_decision_history_rebuilds_the_policy_engine(tmp_path):
    engine = PolicyEngine()
    path = tmp_path / "journal.jsonl"
    view = RunView(431, {"kl_coef": 0.05}, {"kl_coef": 0.05}, [CheckpointView(400, "healthy")])
    with Journal(path) as j:
        for d in engine.decide(431, [ALERT], view):
            j.finished(j.decided(d, alerts=[ALERT]), "done")
        operator = Decision(Action.ROLLBACK, 440, "operator rollback to step 400", target_step=400)
        j.finished(j.decided(operator, source="operator"), "done")
    with Journal(path) as j:
        history = j.decision_history()
        assert len(j.decision_history(sources=("policy", "operator"))) == 2
    assert [(d.action, phase) for d, phase in history] == [(Action.ROLLBACK, "done")]
    rebuilt = PolicyEngine()
    rebuilt.replay_journal(history)
    assert rebuilt.state_dict()["rollbacks"] == engine.state_dict()["rollbacks"]
    assert rebuilt.in_cooldown()


SHORT_WRITE = r"""
import resource, signal, sys
from rlguard.orchestrator.journal import Journal
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: EFBIG, not a killed process
j = Journal(path)
j.note("before")
size = j.path.stat().st_size
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for 100 bytes: the next write stops short
try:
    j.note("x" * 1000)
    print("no error")
except OSError as e:
    print("raised", e.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
j.note("after")
j.close()
"""


def test_a_short_write_is_truncated_back_and_raised_never_glued_to_the_next_entry(tmp_path):
    """A real short write: the kernel stops a write at RLIMIT_FSIZE (like a disk that fills up)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    path = tmp_path / "journal.jsonl"
    proc = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(path)], cwd=repo, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "raised", proc.stdout
    read = read_journal(path)
    assert read.bad_lines == [] and read.ends_with_newline
    assert [(e["seq"], e["message"]) for e in read.entries] == [(1, "before"), (2, "after")]
