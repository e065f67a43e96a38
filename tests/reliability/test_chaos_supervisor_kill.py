"""kill -9 of the supervisor itself, five times in one run, then `rlguard run --resume RUN_DIR`.

The run has collapses on purpose (so the policies decide rollbacks and tightenings while
the supervisor is being killed); half of the kills land right after a decision was
journaled as `decided`, when its outcome is most likely still open. After the last resume
the run must complete with every decision decided once with exactly one outcome, no
command of a decision applied twice by the worker, and the stream/checkpoint invariants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.reliability.chaos_lib import (
    SupervisorProcess,
    check_run,
    read_jsonl,
    record,
    run_config,
    seeded_rng,
    wait_for,
    write_yaml,
)
from tests.reliability.chaos_worker import FINISH_FILE


def _decided(run_dir: Path) -> int:
    return sum(1 for e in read_jsonl(run_dir / "journal.jsonl") if e.get("phase") == "decided")


def _supervisor_pid(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "supervisor.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _events(run_dir: Path) -> int:
    return len(read_jsonl(run_dir / "metrics.jsonl"))


def supervisor_kills(tmp_path: Path, *, kills: int, steps: int, seed: str) -> dict:
    rng = seeded_rng(seed)
    run_dir = tmp_path / "run"
    faults = {str(a): {"collapse_at": 12 + 25 * a} for a in range(12)}
    scenario = {"steps": steps, "checkpoint_every": 3, "step_s": 0.04, "ckpt_bytes": 64 << 10, "faults": faults}
    raw = run_config(tmp_path, scenario, supervisor={"max_restarts": 10},
                     policies={"cooldown": {"steps": 3}, "rollback": {"budget": 20, "budget_window_steps": 1000}})
    cfg_path = write_yaml(tmp_path / "run.yaml", raw)
    procs = [SupervisorProcess(run_dir, cfg_path, index=0)]
    mid_decision = 0
    try:
        for i in range(kills):
            sup = procs[-1]
            wait_for(lambda sup=sup: _supervisor_pid(run_dir) == sup.proc.pid and _events(run_dir) > 0, 60,
                     "the supervisor to be up")
            if i % 2 == 0:
                n = _decided(run_dir)
                try:
                    wait_for(lambda n=n: _decided(run_dir) > n, 6, "a new decision")
                    time.sleep(rng.uniform(0.0, 0.05))
                    mid_decision += 1
                except AssertionError:
                    pass  # no decision coming: kill at a random moment instead
            else:
                n = _events(run_dir)
                target = n + rng.randint(3, 12)
                wait_for(lambda target=target: _events(run_dir) >= target, 60, f"{target} events")
            assert sup.proc.poll() is None, f"supervisor exited early:\n{sup.tail()}"
            sup.kill9()
            time.sleep(rng.uniform(0.0, 0.5))  # training goes on unsupervised for a while
            procs.append(SupervisorProcess(run_dir, resume=True, index=i + 1))
        wait_for(lambda: _supervisor_pid(run_dir) == procs[-1].proc.pid, 60, "the last resume to be up")
        (run_dir / FINISH_FILE).write_text("enough")  # the worker ends the run a few steps later
        rc = procs[-1].wait(240)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
    assert rc == 0, f"resumed supervisor exited {rc}:\n{procs[-1].tail()}"
    counts, findings = check_run(run_dir)
    journal = read_jsonl(run_dir / "journal.jsonl")
    states = [e for e in journal if e.get("kind") == "state"]
    if not states or states[-1]["state"] != "completed":
        findings.append(f"the run did not end completed: {states[-1] if states else None}")
    return {"kills": kills, "mid_decision": mid_decision, "decisions": counts["decisions"], "findings": findings,
            "resumes": sum(1 for e in journal if e.get("event") == "supervisor_started" and e.get("resume"))}


def test_five_kill_9s_of_the_supervisor_lose_no_decision_and_repeat_no_action(tmp_path):
    fig = supervisor_kills(tmp_path, kills=5, steps=100_000, seed="supervisor-kills")
    record("supervisor_kill9", kind="fault", name="kill -9 of the supervisor, then rlguard run --resume",
           injected=fig["kills"], survived=fig["resumes"] if not fig["findings"] else 0, data_lost=len(fig["findings"]),
           note=f"{fig['mid_decision']} right after a decision; {fig['decisions']} decisions, each with one outcome")
    assert not fig["findings"], "\n".join(fig["findings"])
    assert fig["resumes"] == fig["kills"]
    assert fig["decisions"] >= 1  # the first collapse was decided on while the supervisor was being killed


def test_a_collapse_that_began_while_the_supervisor_was_down_is_acted_on_after_resume(tmp_path):
    """The detectors are warmed by replaying metrics.jsonl silently on --resume; events the dead
    supervisor never saw must still be able to raise an alert, or a collapse goes unhandled."""
    run_dir = tmp_path / "run"
    scenario = {"steps": 120, "checkpoint_every": 3, "step_s": 0.04, "ckpt_bytes": 64 << 10,
                "faults": {"0": {"collapse_at": 30}}}
    cfg_path = write_yaml(tmp_path / "run.yaml", run_config(tmp_path, scenario))
    first = SupervisorProcess(run_dir, cfg_path, index=0)
    second = None
    try:
        wait_for(lambda: _events(run_dir) >= 12, 60, "step 12")
        first.kill9()
        wait_for(lambda: _events(run_dir) >= 40, 60, "the unsupervised worker to collapse")  # kl > 0.5 from step 33
        second = SupervisorProcess(run_dir, resume=True, index=1)
        rc = second.wait(120)
    finally:
        for p in (first, second):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
    journal = read_jsonl(run_dir / "journal.jsonl")
    resumed = next(e["seq"] for e in journal if e.get("event") == "supervisor_started" and e.get("resume"))
    after = [e for e in journal if e["seq"] > resumed and e.get("kind") in ("alert", "decision")]
    record("collapse_while_supervisor_down", kind="fault", name="collapse while the supervisor is down, then --resume",
           injected=1, survived=1 if after else 0, data_lost=0 if after else 1,
           note="alert + decision after resume" if after else "collapse never alerted or acted on after resume")
    assert rc == 0, second.tail()
    assert any(e["kind"] == "decision" for e in after), "no alert or decision after resume: the collapse went unhandled"


def test_a_rollback_the_worker_carried_out_while_the_supervisor_died_is_journaled_as_done(tmp_path):
    """The supervisor dies after the worker applied a rollback's load command but before its ack
    arrived. On --resume the journal must not call that rollback `skipped` (abandoned): it happened."""
    run_dir = tmp_path / "run"
    scenario = {"steps": 100_000, "checkpoint_every": 3, "step_s": 0.04, "ckpt_bytes": 16 << 10,
                "after_load_s": 1.5, "faults": {"0": {"collapse_at": 12}}}
    cfg_path = write_yaml(tmp_path / "run.yaml", run_config(tmp_path, scenario))
    first = SupervisorProcess(run_dir, cfg_path, index=0)
    second = None
    try:
        wait_for(lambda: any(r["kind"] == "load" for r in read_jsonl(run_dir / "applied.jsonl")), 60,
                 "the worker to apply the rollback", poll=0.01)
        first.kill9()
        second = SupervisorProcess(run_dir, resume=True, index=1)
        wait_for(lambda: _supervisor_pid(run_dir) == second.proc.pid, 60, "the resumed supervisor")
        (run_dir / FINISH_FILE).write_text("enough")
        rc = second.wait(120)
    finally:
        for p in (first, second):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
    counts, findings = check_run(run_dir)
    record("supervisor_kill9_after_load", kind="fault", name="kill -9 of the supervisor after the worker applied a "
           "rollback, before its ack", injected=1, survived=int(rc == 0 and not findings), data_lost=len(findings),
           note="; ".join(findings)[:120])
    assert rc == 0, second.tail()
    assert not findings, "\n".join(findings)
