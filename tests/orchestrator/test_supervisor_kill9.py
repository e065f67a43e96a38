"""kill -9 of the worker and of the supervisor itself, mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.orchestrator.harness import (
    FAKE_WORKER,
    FAST_SUPERVISOR,
    QUIET_MONITORS,
    fake_config,
    journal,
    metric_steps,
)

REPO = Path(__file__).resolve().parents[2]


def _wait(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(run_dir: Path) -> list:
    p = run_dir / "metrics.jsonl"
    return metric_steps(run_dir) if p.exists() else []


def test_kill_9_of_the_worker_restarts_from_the_last_healthy_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cfg = fake_config(tmp_path, {"steps": 40, "step_s": 0.03, "checkpoint_every": 2})
    sup = Supervisor(run_dir, cfg)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", sup.run()), daemon=True)
    t.start()
    _wait(lambda: len(_steps(run_dir)) >= 9, what="step 9")
    os.killpg(sup.live.worker.pgid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    result = out["r"]
    assert result.state is RunState.COMPLETED and result.restarts_left == cfg.supervisor.max_restarts - 1
    launch = [e for e in journal(run_dir) if e.get("event") == "launch"][1]
    resumed_at = int(Path(launch["resume"]).name.split("-")[1])
    # resumed from a checkpoint that was healthy when the worker died, and finished the run
    healthy = {e["step"] for e in journal(run_dir) if e["kind"] == "checkpoint" and e["health"] == "healthy"
               and e["seq"] < launch["seq"]}
    assert resumed_at == max(healthy)
    assert metric_steps(run_dir)[-1] == (1, 40)
    assert [s for a, s in metric_steps(run_dir) if a == 1][0] == resumed_at + 1


def test_kill_9_of_the_supervisor_then_resume_reattaches_to_the_live_worker(tmp_path):
    run_dir = tmp_path / "run"
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"steps": 120, "step_s": 0.03, "checkpoint_every": 5}))
    sup_cfg = dict(FAST_SUPERVISOR)
    sup_cfg["command"] = [sys.executable, str(FAKE_WORKER), "--scenario", str(scenario), "--run-dir", "{run_dir}",
                          "{resume}"]
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump({"monitors": QUIET_MONITORS, "supervisor": sup_cfg}))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "rlguard.orchestrator.cli", "run"]
    first = subprocess.Popen(cmd + [str(cfg_path), "--out", str(run_dir), "-q"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        _wait(lambda: len(_steps(run_dir)) >= 15, what="step 15")
        worker_pid = json.loads((run_dir / "supervisor.json").read_text())["worker"]["pid"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        n = len(_steps(run_dir))
        _wait(lambda: len(_steps(run_dir)) >= n + 5, what="training going on without a supervisor")
        second = subprocess.run(cmd + ["--resume", str(run_dir), "-q"], env=env, cwd=REPO, timeout=90,
                                capture_output=True, text=True)
    finally:
        first.kill()
        if second is None:
            try:
                os.kill(worker_pid, signal.SIGKILL)
            except (ProcessLookupError, UnboundLocalError):
                pass
    assert second.returncode == 0, second.stderr[-2000:]
    entries = journal(run_dir)
    reattached = [e for e in entries if e["kind"] == "state" and e["reason"].startswith("reattached to worker pid")]
    assert len(reattached) == 1 and str(worker_pid) in reattached[0]["reason"]
    assert entries[-2]["kind"] == "state" and entries[-2]["state"] == "completed"
    # one worker, never interrupted: every step once, in order, attempt 0
    assert metric_steps(run_dir) == [(0, s) for s in range(1, 121)]
    assert len([e for e in entries if e.get("event") == "launch"]) == 1
