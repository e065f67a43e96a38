"""Torn last lines: a process killed in the middle of appending to metrics.jsonl or journal.jsonl.

The torn fragment must be detected and ignored, and, above all, must not swallow the next
good line: the next writer has to start on a line of its own.
"""

from __future__ import annotations

import os
import signal

from rlguard.orchestrator.event_reader import EventReader
from rlguard.orchestrator.journal import read_journal
from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.reliability.chaos_lib import (
    SupervisorProcess,
    check_run,
    join_supervisor,
    read_jsonl,
    record,
    run_config,
    run_in_thread,
    wait_for,
    write_yaml,
)

TORN_EVENT = b'{"step": 999, "time": 1764340000.25, "metrics": {"reward": 1.8'


def test_a_torn_metrics_line_left_by_a_killed_worker_is_ignored_and_loses_no_later_event(tmp_path):
    run_dir = tmp_path / "run"
    scenario = {"steps": 24, "checkpoint_every": 2, "step_s": 0.03}
    sup = Supervisor(run_dir, parse_run_config(run_config(tmp_path, scenario)), scheduler=False)
    thread, box = run_in_thread(sup)
    try:
        wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 8, 60, "step 8")
        w = sup.live.worker
        os.killpg(w.pgid, signal.SIGKILL)
        with open(run_dir / "metrics.jsonl", "ab") as f:  # what the kill left behind mid-write
            f.write(TORN_EVENT)
        result = join_supervisor(sup, thread, box, 90)
    finally:
        if thread.is_alive():
            sup.detach("test cleanup")
    reader = EventReader(run_dir / "metrics.jsonl")
    events = list(reader)
    relaunch = [e for e in read_jsonl(run_dir / "journal.jsonl") if e.get("event") == "launch"][-1]
    first_of_new_attempt = [e.step for e in events if e.attempt == relaunch["attempt"]][:1]
    resumed = int(relaunch["resume"].rsplit("-", 1)[1]) if relaunch.get("resume") else 0
    lost = 0 if first_of_new_attempt == [resumed + 1] else 1
    record("torn_metrics_line", kind="fault", name="metrics.jsonl torn by a killed worker, then appended to",
           injected=1, survived=1 - lost, data_lost=lost,
           note="fragment ignored, next event intact" if not lost else "the relaunched worker's first event was "
           "glued onto the torn fragment and lost")
    assert result.state is RunState.COMPLETED
    assert reader.bad_lines == 1 and "999" not in {str(e.step) for e in events}
    assert first_of_new_attempt == [resumed + 1], (
        f"attempt {relaunch['attempt']} resumed from step {resumed} but its first readable event is "
        f"{first_of_new_attempt}: the event appended after the torn line was lost")


def test_a_torn_journal_line_left_by_a_killed_supervisor_is_ignored_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    scenario = {"steps": 80, "checkpoint_every": 3, "step_s": 0.04, "ckpt_bytes": 16 << 10}
    cfg_path = write_yaml(tmp_path / "run.yaml", run_config(tmp_path, scenario))
    first = SupervisorProcess(run_dir, cfg_path, index=0)
    second = None
    try:
        wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 10, 60, "step 10")
        first.kill9()
        with open(run_dir / "journal.jsonl", "ab") as f:
            f.write(b'{"seq": 99999, "kind": "decision", "phase": "decided", "decision_id": "d-0999')
        torn = read_journal(run_dir / "journal.jsonl")
        assert torn.torn_tail
        second = SupervisorProcess(run_dir, resume=True, index=1)
        rc = second.wait(120)
    finally:
        for p in (first, second):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
    counts, findings = check_run(run_dir)
    j = read_journal(run_dir / "journal.jsonl")
    repaired = [e for e in j.entries if e.get("event") == "journal_repair"]
    ok = rc == 0 and not findings and repaired and not j.torn_tail
    record("torn_journal_line", kind="fault", name="journal.jsonl torn by a killed supervisor, then --resume",
           injected=1, survived=int(bool(ok)), data_lost=len(findings), note=f"{len(repaired)} journal_repair note(s)")
    assert rc == 0, second.tail()
    assert repaired and not j.torn_tail and len(j.bad_lines) == 1
    assert not any(e.get("decision_id") == "d-0999" for e in j.entries)
    assert not findings, findings
