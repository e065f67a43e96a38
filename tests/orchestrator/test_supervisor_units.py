"""Pieces of the supervisor on their own: config errors, argv placeholders, sinks, periodic
jobs, and liveness / backoff / budget driven by an injected clock (nothing sleeps)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest

from rlguard.monitors.alerts import Alert, Severity
from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator import liveness, periodic
from rlguard.orchestrator.commands import Ack, Command, CommandKind
from rlguard.orchestrator.launcher import describe_exit, expand_argv
from rlguard.orchestrator.sinks import SinkFanout
from rlguard.orchestrator.spec import ConfigError, load_run_config, parse_run_config
from rlguard.orchestrator.state import ExitCode, RunState
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.policies.decision import Action, Decision
from tests.orchestrator.harness import journal

# ------------------------------------------------------------------ config


def test_unknown_and_bad_fields_are_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_run_config({"supervisor": {"max_restart": 3}})
    assert "supervisor.max_restart: unknown field" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_run_config({"supervisor": {"heartbeat_timeout_s": -1}})
    assert "supervisor.heartbeat_timeout_s" in str(e.value) and "greater than 0" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_run_config({"trainer": {}, "monitor": {}})
    assert "monitor: unknown field" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_run_config({"supervisor": {"host": "0.0.0.0"}})
    assert "allow_remote" in str(e.value)
    assert parse_run_config({"supervisor": {"host": "0.0.0.0", "allow_remote": True}}).supervisor.host == "0.0.0.0"
    bad = tmp_path / "bad.yaml"
    bad.write_text("supervisor: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "missing.yaml")


def test_monitor_and_policy_sections_are_validated_before_anything_starts():
    from rlguard.orchestrator.components import validate_all

    with pytest.raises(ConfigError, match="rollbak"):
        validate_all(parse_run_config({"policies": {"rollbak": {}}}))
    with pytest.raises(ConfigError, match="spik"):
        validate_all(parse_run_config({"monitors": {"spik": {}}}))
    with pytest.raises(ConfigError, match="trainer.stepz"):
        validate_all(parse_run_config({"trainer": {"stepz": 3}}))


def test_run_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    from rlguard.orchestrator.run_cli import run_main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("supervisor:\n  max_restarts: lots\n")
    assert run_main([str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "supervisor.max_restarts" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ launcher


def test_placeholders_expand_to_whole_arguments():
    argv = expand_argv(["torchrun", "--nproc-per-node=2", "train.py", "{resume}", "{overrides}", "--out={run_dir}"],
                       run_dir=Path("/r"), config=Path("/r/config.yaml"), resume=Path("/r/checkpoints/step-000010"),
                       overrides={"lr": 5e-06, "kl_coef": 0.075}, attempt=2)
    assert argv == ["torchrun", "--nproc-per-node=2", "train.py", "--resume", "/r/checkpoints/step-000010",
                    "--set", "kl_coef=0.075", "--set", "lr=5e-06", "--out=/r"]
    assert expand_argv(["x", "{resume}", "{overrides}"], run_dir=Path("/r"), config=Path("/c"), resume=None,
                       overrides={}, attempt=0) == ["x"]


def test_exit_descriptions_name_signals_and_oom():
    assert describe_exit(0) == "exited 0"
    assert describe_exit(3) == "exited 3"
    assert "SIGKILL" in describe_exit(-9) and "out of memory" in describe_exit(-9)
    assert describe_exit(-15) == "killed by SIGTERM"
    assert "out of memory" in describe_exit(137)


def test_exit_codes_per_final_state():
    assert [int(ExitCode.for_state(s)) for s in (RunState.COMPLETED, RunState.HALTED, RunState.FAILED,
                                                   RunState.DETACHED)] == [0, 3, 4, 5]


# ------------------------------------------------------------------ sinks


class _Recorder:
    def __init__(self):
        self.calls = []

    def on_event(self, event):
        self.calls.append(("event", event.step))

    def on_decision(self, decision, phase, outcome):
        self.calls.append(("decision", decision.action.value, phase, outcome))

    def close(self):
        self.calls.append(("close",))


class _Broken:
    def on_event(self, event):
        raise RuntimeError("dashboard down")

    def on_alert(self, alert):
        raise ValueError("nope")


def test_a_failing_sink_is_counted_and_never_stops_the_others():
    good, fan = _Recorder(), None
    fan = SinkFanout([_Broken(), good])
    for step in range(3):
        fan.on_event(MetricEvent(step, {"kl": 0.1}))
    fan.on_alert(Alert("spike", "spike", "kl", 2, Severity.WARNING, 2, "kl jumped"))
    fan.on_decision(Decision(Action.NOTIFY, 2, "r"), "done", "notified")
    fan.on_state("running")  # nobody implements it: skipped
    fan.close()
    assert good.calls == [("event", 0), ("event", 1), ("event", 2), ("decision", "notify", "done", "notified"),
                          ("close",)]
    assert fan.errors == {"_Broken.on_event": 3, "_Broken.on_alert": 1} and fan.error_total == 4


# ------------------------------------------------------------------ commands


def test_commands_round_trip_and_unknown_kinds_are_named():
    c = Command(CommandKind.LOAD, {"path": "/r/checkpoints/step-000004", "step": 4}, decision_id="d-000009")
    assert Command.from_dict(c.to_dict()) == c
    assert Ack.from_dict(Ack(c.id, False, "corrupt", 7).to_dict()) == Ack(c.id, False, "corrupt", 7)
    with pytest.raises(ValueError, match="explode"):
        Command.from_dict({"kind": "explode"})


# ------------------------------------------------------------------ periodic jobs


def test_periodic_jobs_post_messages_and_count_errors(tmp_path):
    posted = []
    jobs = periodic.PeriodicJobs(lambda k, p: posted.append((k, p)), run_dir=tmp_path, liveness_every_s=1.0,
                                 checkpoint_every_s=60.0, eval_every_s=None, misfire_grace_s=5)
    assert sorted(jobs.job_ids) == sorted([periodic.LIVENESS, periodic.DISK, periodic.WANT_CHECKPOINT])
    jobs.start()  # job defaults apply when the scheduler starts
    try:
        job = jobs._scheduler.get_job(periodic.LIVENESS)
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 5
    finally:
        jobs.shutdown()
    jobs.check_disk()
    assert posted[0][0] == periodic.DISK and posted[0][1]["free_gb"] > 0

    def boom(kind, payload):
        raise OSError("inbox gone")

    failing = periodic.PeriodicJobs(boom, run_dir=tmp_path, liveness_every_s=0.05, checkpoint_every_s=None,
                                    eval_every_s=None)
    failing.start()
    try:
        deadline = time.monotonic() + 10
        while failing.counters[f"{periodic.LIVENESS}.error"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        failing.shutdown()
    assert failing.counters[f"{periodic.LIVENESS}.error"] >= 1


# ------------------------------------------------------------------ liveness with an injected clock


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def _offline_supervisor(tmp_path, **sup) -> tuple[Supervisor, FakeClock]:
    clock = FakeClock()
    cfg = parse_run_config({"supervisor": {"command": [sys.executable, "-c", "import time; time.sleep(60)"],
                                           "heartbeat_timeout_s": 10, "step_timeout_s": 100, "stop_grace_s": 0,
                                           "restart_backoff_initial_s": 2, "restart_backoff_factor": 3,
                                           "restart_backoff_max_s": 10, "max_restarts": 3, **sup}})
    s = Supervisor(tmp_path / "run", cfg, serve_http=False, scheduler=False, clock=clock, sleep=clock.sleep)
    return s, clock


def test_frozen_worker_restart_backoff_and_budget_follow_the_clock(tmp_path):
    sup, clock = _offline_supervisor(tmp_path)
    try:
        sup._start()
        assert sup.live.state is RunState.STARTING and sup.live.restarts_left == 3
        sup.worker_heartbeat({"progress_age_s": 0.0})
        sup.handle(sup.post("sync", {"attempt": 0, "events": []}))
        assert sup.live.state is RunState.RUNNING
        clock.now += 9.0
        liveness.check_liveness(sup)
        assert sup.live.state is RunState.RUNNING  # 9 s < heartbeat_timeout_s
        delays = []
        for _ in range(3):
            clock.now += 11.0  # silent longer than heartbeat_timeout_s: frozen
            liveness.check_liveness(sup)
            assert sup.live.state is RunState.RESTARTING and sup.live.worker is None
            delays.append(sup.live.relaunch_at - clock.now)
            liveness.check_timers(sup)
            assert sup.live.state is RunState.RESTARTING  # still backing off
            clock.now = sup.live.relaunch_at
            liveness.check_timers(sup)
            assert sup.live.state is RunState.STARTING
            sup.worker_heartbeat({"progress_age_s": 0.0})
        assert delays == [2.0, 6.0, 10.0]  # 2 * 3**n, capped at 10
        assert sup.live.restarts_left == 0
        clock.now += 11.0
        liveness.check_liveness(sup)
        assert sup.live.state is RunState.FAILED and "restart budget spent (3)" in sup.live.reason
    finally:
        if sup.live.worker is not None:
            sup.live.worker.stop(0)
        sup._shutdown()
    reasons = [e["reason"] for e in journal(tmp_path / "run") if e["kind"] == "restart"]
    assert len(reasons) == 4 and all("(frozen)" in r for r in reasons)


def test_hung_loop_is_told_from_a_pause(tmp_path):
    sup, clock = _offline_supervisor(tmp_path)
    try:
        sup._start()
        sup.worker_heartbeat({"progress_age_s": 0.0})
        sup.handle(sup.post("sync", {"attempt": 0, "events": []}))
        sup.handle(sup.post("operator", {"action": "pause", "body": {}}))
        assert sup.live.state is RunState.PAUSED
        for _ in range(30):  # 300 s paused: heartbeats flow, no progress, but paused is not hung
            clock.now += 10.0
            sup.worker_heartbeat({"progress_age_s": 200.0, "paused": True})
            liveness.check_liveness(sup)
        assert sup.live.state is RunState.PAUSED
        sup.handle(sup.post("operator", {"action": "resume", "body": {}}))
        clock.now += 1.0
        sup.worker_heartbeat({"progress_age_s": 150.0, "paused": False})
        liveness.check_liveness(sup)
        assert sup.live.state is RunState.RESTARTING and "(hung)" in sup.live.reason
    finally:
        if sup.live.worker is not None:
            sup.live.worker.stop(0)
        sup._shutdown()


def test_failed_checkpoint_writes_are_counted_per_worker_process_and_journaled_once_each(tmp_path):
    # The whole path, a real worker on a full disk, is tests/reliability/test_chaos_disk_full.py.
    sup, _ = _offline_supervisor(tmp_path)
    try:
        sup.live.launch_attempt = 0
        for step, value in enumerate([0.0, math.nan, math.inf, -1.0, 1.0, 1.0, 3.0], start=1):
            sup._note_checkpoint_failures(MetricEvent(step=step, metrics={"checkpoint_failures": value}))
        sup.live.launch_attempt = 1  # relaunched: the new process counts from 0 again
        sup._note_checkpoint_failures(MetricEvent(step=8, metrics={"checkpoint_failures": 1.0}))
        notes = [e for e in journal(tmp_path / "run") if e.get("event") == "checkpoint_write_failed"]
        assert [(n["step"], n["failures"]) for n in notes] == [(5, 1), (7, 3), (8, 4)]
        assert "could not write 2 checkpoint(s) (reported at step 7; 3 in this run)" in notes[1]["message"]
        assert sup.view().checkpoint_write_failures == 4
    finally:
        sup.journal.close()
