"""The rollback contract under load (bugs found by the guarded SmolLM2 demo, bench/notes/demo.md Run 2):
a LOAD decided from step N lands at step N's boundary even when the supervisor is slow; the
target of an unfinished rollback is never pruned nor demoted by a later alert with a later onset;
the constraints of a rollback that failed carry over to the relaunch."""

from __future__ import annotations

import json
import time

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator import restarts
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import fake_config, journal, metric_steps, run_supervisor


class SlowAlertSink:
    """A sink that takes longer than sync_wait_s for every alert: a supervisor slowed by load."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def on_alert(self, alert) -> None:
        time.sleep(self.delay_s)


def test_a_slow_supervisor_still_lands_the_load_at_the_decided_step(tmp_path):
    # sync_wait_s (0.05 s) is far shorter than the supervisor's handling of the NaN alert (0.6 s);
    # the wait budget scales with the step time (5 x 0.3 s), so the worker waits for the decision.
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 9, "checkpoint_every": 2, "step_s": 0.3, "faults": {"0": {"nan_at": 7}}},
                      supervisor={"sync_wait_s": 0.05, "sync_wait_step_fraction": 5.0})
    sup = Supervisor(run_dir, cfg, sinks=[SlowAlertSink(0.6)])
    result = run_supervisor(sup)
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    assert sup.registry.held == set()  # the target was held while loading, released once loaded
    steps = metric_steps(run_dir)
    # the load decided from step 7 was applied at step 7's boundary: no step 8 in the abandoned timeline
    assert steps[:8] == [(0, s) for s in range(1, 8)] + [(1, 5)]


def _events(run_dir, kind, **match):
    return [e for e in journal(run_dir) if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def test_a_refused_load_with_no_older_healthy_checkpoint_relaunches_from_the_start_tightened(tmp_path):
    # Checkpoint 2 is the only healthy one and the rollback target; its bytes are damaged, so the
    # worker refuses it. Nothing older is healthy: relaunch from the start with the tightened values.
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 8, "checkpoint_every": 2,
                                 "faults": {"0": {"nan_at": 5, "corrupt_ckpt_at": 2}}})
    sup = Supervisor(run_dir, cfg)
    result = run_supervisor(sup)
    assert result.state is RunState.COMPLETED and sup.registry.held == set()
    decided = _events(run_dir, "decision", phase="decided")[0]
    assert decided["decision"]["target_step"] == 2
    tightened = decided["decision"]["params"]
    assert tightened["kl_coef"] > 0.05
    fallback = _events(run_dir, "note", event="rollback_fallback")
    assert fallback and fallback[0]["resume_step"] is None and "from the start" in fallback[0]["message"]
    relaunch = _events(run_dir, "note", event="launch")[1]
    assert relaunch["resume"] is None and relaunch["constraints"]["kl_coef"] == tightened["kl_coef"]
    done = _events(run_dir, "decision", phase="done")
    assert done and "from the start" in done[0]["outcome"]["message"]
    first_of_attempt_1 = next(json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
                              if json.loads(x).get("attempt") == 1)
    assert first_of_attempt_1["step"] == 1 and first_of_attempt_1["metrics"]["kl_coef"] == tightened["kl_coef"]


def test_events_of_an_abandoned_timeline_do_not_undo_the_decided_constraints(tmp_path):
    # The demo's bug: the old worker's last events (old kl_coef) arrived while the supervisor was
    # restarting and overwrote the tightened values the relaunch was to use.
    cfg = fake_config(tmp_path, {"steps": 4})
    sup = Supervisor(tmp_path / "run", cfg, serve_http=False, scheduler=False)
    try:
        sup.live.constraints = {"kl_coef": 0.2, "clip_range": 0.1, "lr": 5e-6}  # decided by a rollback
        for state in (RunState.ROLLING_BACK, RunState.RESTARTING):
            sup.live.state = state
            sup.observe(MetricEvent(step=6, metrics={"kl": 0.1, "kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5},
                                     time=time.time(), attempt=0))
            assert sup.live.constraints == {"kl_coef": 0.2, "clip_range": 0.1, "lr": 5e-6}
            sup.live.last_seen.clear()
        sup.live.state = RunState.RUNNING  # a running worker's reports are the truth again
        sup.observe(MetricEvent(step=7, metrics={"kl": 0.1, "kl_coef": 0.3}, time=time.time(), attempt=0))
        assert sup.live.constraints["kl_coef"] == 0.3
    finally:
        sup.journal.close()


def test_a_tighten_the_worker_never_applied_carries_over_to_the_relaunch(tmp_path):
    from rlguard.orchestrator.commands import Command, CommandKind
    from rlguard.policies.decision import Action, Decision

    cfg = fake_config(tmp_path, {"steps": 4})
    sup = Supervisor(tmp_path / "run", cfg, serve_http=False, scheduler=False)
    try:
        sup.live.constraints = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5}
        sup.live.state = RunState.RUNNING
        d = Decision(Action.TIGHTEN, 5, "test", params={"kl_coef": 0.1})
        did = sup.journal.decided(d, alerts=(), constraints=sup.live.constraints, target=None, source="policy")
        sup.send(Command(CommandKind.SET_CONSTRAINTS, {"kl_coef": 0.1}, decision_id=did), d)
        restarts.restart(sup, "worker exited 3")
        assert sup.live.constraints["kl_coef"] == 0.1
        assert sup.constraint_overrides()["kl_coef"] == 0.1
        done = _events(tmp_path / "run", "decision", phase="done")
        assert done and "recorded for the relaunch" in done[0]["outcome"]["message"]
    finally:
        sup.journal.close()
