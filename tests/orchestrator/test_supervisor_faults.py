"""The supervisor against real worker processes that fail on purpose (tests/orchestrator/fake_worker.py)."""

from __future__ import annotations

from rlguard.orchestrator.state import ExitCode, RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import fake_config, journal, metric_steps, run_supervisor, story


def test_nan_at_step_7_rolls_back_in_process_and_completes(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 14, "checkpoint_every": 2, "faults": {"0": {"nan_at": 7}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED and result.exit_code is ExitCode.COMPLETED
    assert result.rollbacks == 1 and result.restarts_left == cfg.supervisor.max_restarts
    assert story(run_dir) == [
        ("launch", 0, None),
        ("state", "starting"),
        ("state", "running"),
        ("decision", "rollback", "decided"),
        ("state", "rolling_back"),
        ("decision", "rollback", "done"),
        ("state", "running"),
        ("state", "completed"),
    ]
    decided = next(e for e in journal(run_dir) if e["kind"] == "decision" and e["phase"] == "decided")
    assert decided["decision"]["target_step"] == 4  # step 6 was still pending when kl went NaN
    assert decided["inputs"]["alerts"][0]["code"] == "non_finite"
    # attempt 0 trained 1..7; attempt 1 resumed after step 4 with tightened constraints
    steps = metric_steps(run_dir)
    assert steps[:7] == [(0, s) for s in range(1, 8)]
    assert steps[7:] == [(1, s) for s in range(5, 15)]


def _events(run_dir, kind, **match):
    return [e for e in journal(run_dir) if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def test_crash_at_step_5_restarts_from_last_healthy_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 10, "checkpoint_every": 2, "faults": {"0": {"crash_at": 5}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED
    assert result.restarts_left == cfg.supervisor.max_restarts - 1 and result.attempts == 2
    assert story(run_dir) == [
        ("launch", 0, None), ("state", "starting"), ("state", "running"),
        ("restart",), ("state", "restarting"),
        ("launch", 1, "step-000002"), ("state", "starting"), ("state", "running"),
        ("state", "completed"),
    ]
    restart = _events(run_dir, "restart")[0]
    assert restart["reason"] == "worker exited 3" and "crashing at step 5" in restart["worker_log_tail"]
    assert metric_steps(run_dir) == [(0, s) for s in range(1, 6)] + [(1, s) for s in range(3, 11)]


def test_worker_killed_by_sigkill_is_reported_as_possible_oom_and_restarted(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 8, "checkpoint_every": 2, "faults": {"0": {"sigkill_at": 6}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED
    reason = _events(run_dir, "restart")[0]["reason"]
    assert "SIGKILL" in reason and "out of memory" in reason
    assert _events(run_dir, "note", event="launch")[1]["resume"].endswith("step-000004")


def test_hung_worker_is_killed_and_restarted(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 6, "checkpoint_every": 2, "faults": {"0": {"hang_at": 4}}},
                      supervisor={"step_timeout_s": 2.0})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED
    assert "(hung)" in _events(run_dir, "restart")[0]["reason"]
    assert metric_steps(run_dir)[-3:] == [(1, 4), (1, 5), (1, 6)]


def test_frozen_worker_without_heartbeats_is_killed_and_restarted(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 6, "checkpoint_every": 2, "faults": {"0": {"freeze_at": 4}}},
                      supervisor={"heartbeat_timeout_s": 2.0, "stop_grace_s": 0.5})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED
    assert "(frozen)" in _events(run_dir, "restart")[0]["reason"]


def test_restart_budget_spent_fails_the_run_with_exit_code_4(tmp_path):
    run_dir = tmp_path / "run"
    faults = {str(a): {"crash_at": 3} for a in range(5)}
    cfg = fake_config(tmp_path, {"steps": 10, "faults": faults}, supervisor={"max_restarts": 2})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.FAILED and result.exit_code is ExitCode.FAILED == 4
    assert result.restarts_left == 0 and result.attempts == 3
    assert [x for x in story(run_dir) if x[0] in ("restart", "launch")] == [
        ("launch", 0, None), ("restart",), ("launch", 1, None), ("restart",), ("launch", 2, None), ("restart",)]
    assert story(run_dir)[-1] == ("state", "failed")


def test_kl_runaway_rolls_back_before_the_onset_and_tightens(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 18, "checkpoint_every": 2, "faults": {"0": {"collapse_at": 9}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    alert = _events(run_dir, "alert")[0]["alert"]
    assert (alert["code"], alert["metric"], alert["onset_step"]) == ("bound", "kl", 12)
    decided = _events(run_dir, "decision", phase="decided")[0]
    assert decided["decision"]["action"] == "rollback" and decided["decision"]["target_step"] == 8
    # checkpoint 10 held the start of the bad regime (onset 12 <= 10 + confirm window): suspect
    assert ("checkpoint", 10, "suspect") in story(run_dir, kinds=("checkpoint",))
    after = [e for e in (run_dir / "metrics.jsonl").read_text().splitlines() if '"attempt": 1' in e]
    assert '"kl_coef": 0.075' in after[0] and '"lr": 5e-06' in after[0]


def test_corrupt_checkpoint_is_skipped_and_the_previous_healthy_one_used(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 12, "checkpoint_every": 2,
                                 "faults": {"0": {"corrupt_ckpt_at": 6, "nan_at": 9}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED
    codes = [e["alert"]["code"] for e in _events(run_dir, "alert")]
    assert codes == ["non_finite", "checkpoint_corrupt"]
    assert ("checkpoint", 6, "corrupt") in story(run_dir, kinds=("checkpoint",))
    done = _events(run_dir, "decision", phase="done")[0]
    assert "restored step 4" in done["outcome"]["message"]
    # the worker refused step 6 at the step-9 boundary (checksums first, nothing read), trained
    # one more step on the abandoned timeline, then loaded step 4 in-process: no restart
    assert _events(run_dir, "note", event="rollback_fallback")
    assert metric_steps(run_dir)[9:11] == [(0, 10), (1, 5)] and result.restarts_left == cfg.supervisor.max_restarts


def test_failed_in_process_load_falls_back_to_a_restart_rollback(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 10, "checkpoint_every": 2, "faults": {"0": {"nan_at": 7, "fail_load": True}}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED and result.rollbacks == 1
    assert story(run_dir) == [
        ("launch", 0, None), ("state", "starting"), ("state", "running"),
        ("decision", "rollback", "decided"), ("state", "rolling_back"),
        ("restart",), ("state", "restarting"),
        ("launch", 1, "step-000004"), ("state", "starting"), ("decision", "rollback", "done"),
        ("state", "running"), ("state", "completed"),
    ]
    assert "refusing to load" in _events(run_dir, "restart")[0]["reason"]


def test_rollback_budget_zero_halts_with_exit_code_3(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 30, "step_s": 0.02, "faults": {"0": {"nan_at": 5}}},
                      policies={"rollback": {"budget": 0}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.HALTED and int(result.exit_code) == 3
    assert story(run_dir)[-3:] == [("decision", "halt", "decided"), ("decision", "halt", "done"), ("state", "halted")]
    assert max(s for _, s in metric_steps(run_dir)) < 30


def test_advise_mode_records_the_rollback_without_doing_it(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 8, "faults": {"0": {"nan_at": 5}}},
                      policies={"modes": {"rollback": "advise"}, "rollback": {"when_no_healthy_checkpoint": "tighten"}})
    result = run_supervisor(Supervisor(run_dir, cfg))
    assert result.state is RunState.COMPLETED and result.rollbacks == 0
    first = [x for x in story(run_dir) if x[0] == "decision"][:2]
    assert first == [("decision", "rollback", "decided"), ("decision", "rollback", "skipped")]
    assert {a for a, _ in metric_steps(run_dir)} == {0}


class _MonitorsWithABug:
    """The real stack, except that one update raises: a bug must not end the run."""

    def __init__(self):
        from rlguard.monitors.config import monitor_config_from_dict
        from rlguard.monitors.stack import MonitorStack
        from tests.orchestrator.harness import QUIET_MONITORS

        self.stack = MonitorStack(monitor_config_from_dict(QUIET_MONITORS))

    def update(self, event):
        if event.step == 3:
            raise ZeroDivisionError("detector bug")
        return self.stack.update(event)


def test_a_bug_inside_the_supervisor_is_journaled_and_the_run_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 6})
    result = run_supervisor(Supervisor(run_dir, cfg, monitors=_MonitorsWithABug()))
    assert result.state is RunState.COMPLETED and result.counters["internal_errors"] == 1
    note = _events(run_dir, "note", event="internal_error")[0]
    assert note["message"] == "supervisor internal error: ZeroDivisionError: detector bug"
    assert metric_steps(run_dir) == [(0, s) for s in range(1, 7)]
