"""`rlguard watch` against hostile input: control characters in metric names and decision
reasons, hooks that leave children holding the pipes, and floods of bad lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rlguard.orchestrator import watch
from rlguard.orchestrator.event_reader import EventReader
from rlguard.orchestrator.journal import read_journal
from rlguard.orchestrator.watch import HookRunner
from rlguard.policies.decision import Action, Decision

REPO = Path(__file__).resolve().parents[2]


def _watch(tmp: Path, metrics: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "watch", str(metrics), "--out", str(tmp / "w"),
                           "--until-idle", "1", "--poll-s", "0.05", "-q", *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_nul_in_a_metric_name_is_a_bad_line_and_the_halt_after_it_gets_its_outcome(tmp_path):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text('{"step": 1, "metrics": {"kl": 0.1}}\n'
                       '{"step": 2, "metrics": {"a\\u0000b": NaN}}\n'
                       '{"step": 3, "metrics": {"kl": NaN}}\n')
    proc = _watch(tmp_path, metrics, "--hook", "halt=echo halted")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr  # the halt after the bad line was carried out
    entries = read_journal(tmp_path / "w" / "journal.jsonl").entries
    bad = [e for e in entries if e.get("event") == "bad_event"]
    assert [e["lineno"] for e in bad] == [2] and "control character" in bad[0]["message"]
    decided = {e["decision_id"] for e in entries if e["kind"] == "decision" and e["phase"] == "decided"}
    ended = {e["decision_id"]: e["phase"] for e in entries if e["kind"] == "decision" and e["phase"] != "decided"}
    assert decided and set(ended) == decided and "done" in ended.values()


def test_control_characters_never_reach_a_hook_environment(tmp_path):
    out = tmp_path / "env.txt"
    runner = HookRunner({"halt": f'printf "%s|%s" "$RLGUARD_REASON" "$RLGUARD_RUN_DIR" > {out}'},
                        {"RLGUARD_RUN_DIR": "/runs/x\x00y"}, timeout_s=30)
    phase, outcome = runner.run(Decision(Action.HALT, 2, "non_finite on a\x00b\nnext line\x1b[31m"), "d-000003")
    assert phase == "done", outcome
    assert out.read_text() == "non_finite on a\\x00b\\x0anext line\\x1b[31m|/runs/x\\x00y"


def test_a_hook_timeout_holds_when_a_child_escapes_the_group_with_the_pipes(tmp_path):
    """`setsid` puts the child in a session of its own, out of reach of the group kill; it keeps
    the hook's stdout open. watch must not wait for it (it used to, for the child's whole life)."""
    pid_file = tmp_path / "child.pid"
    runner = HookRunner({"halt": f"setsid sh -c 'echo $$ > {pid_file}; sleep 30' & wait"}, {}, timeout_s=1)
    t0 = time.monotonic()
    phase, outcome = runner.run(Decision(Action.HALT, 1, "x"), "d-1")
    elapsed = time.monotonic() - t0
    try:
        assert phase == "failed" and "timed out after 1 s" in outcome
        assert elapsed < 15, f"the hook held watch for {elapsed:.1f} s past its 1 s timeout"
    finally:
        for _ in range(50):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            time.sleep(0.05)
        if pid_file.exists() and pid_file.read_text().strip():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass


def test_a_hook_that_exits_leaving_a_child_with_the_pipes_is_done_at_once(tmp_path):
    runner = HookRunner({"notify": "echo started; sleep 30 &"}, {}, timeout_s=20)
    t0 = time.monotonic()
    phase, outcome = runner.run(Decision(Action.NOTIFY, 1, "x"), "d-1")
    elapsed = time.monotonic() - t0
    assert phase == "done" and "started" in outcome
    assert elapsed < 10, f"watch waited {elapsed:.1f} s on a background child of a hook that had exited"


def test_a_flood_of_bad_lines_journals_the_first_few_truncated_then_a_count(tmp_path):
    metrics = tmp_path / "m.jsonl"
    rng = __import__("random").Random(5)
    blob = bytes(rng.getrandbits(8) for _ in range(300_000))  # random bytes: thousands of bad lines
    huge = json.dumps({"step": 1, "metrics": {"kl": "A" * 500_000}})  # one value of 500 kB
    metrics.write_bytes(blob + b"\n" + huge.encode() + b"\n" + b'{"step": 2, "metrics": {"kl": 0.1}}\n')
    # A file that starts with garbage is in no known format: forced, it is read as METRICS.md JSONL
    # (unforced, watch stops with one error naming the formats it tried).
    proc = _watch(tmp_path, metrics, "--format", "metrics-jsonl")
    assert proc.returncode == 0, proc.stderr
    journal = tmp_path / "w" / "journal.jsonl"
    entries = read_journal(journal).entries
    bad = [e for e in entries if e.get("event") == "bad_event"]
    assert len(bad) == watch.MAX_BAD_LINE_NOTES
    assert max(len(json.dumps(e)) for e in bad) < 2000
    # no 500 kB journal line (the coverage note's size is set by the failure classes, not by the input)
    assert max(len(line) for line in journal.read_bytes().splitlines() if b'"event": "coverage"' not in line) < 4000
    stopped = entries[-1]
    reader = EventReader(metrics)
    assert [e.step for e in reader] == [2]
    assert stopped["event"] == "watch_stopped" and stopped["events"] == 1
    assert stopped["bad_lines"] == reader.bad_lines > 1000
    assert any(e.get("event") == "bad_events_suppressed" for e in entries)
