"""kill -9 of the real built-in PPO-max worker (tiny Llama from a config), twice: once at a
random step, once while it writes a checkpoint (a .tmp-step-* directory exists). The run
completes; each relaunch continues at the step after the checkpoint it resumed from, and
that checkpoint verifies against its manifest."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from tests.reliability.chaos_lib import (
    FAST_SUPERVISOR,
    QUIET_MONITORS,
    REPO,
    join_supervisor,
    read_jsonl,
    record,
    run_in_thread,
    wait_for,
)


def _writing(run_dir: Path) -> bool:
    try:
        return any(p.name.startswith(".tmp-step-") for p in (run_dir / "checkpoints").iterdir())
    except OSError:
        return False


@pytest.mark.slow
def test_kill_9_of_the_real_ppo_worker_mid_step_and_mid_checkpoint(tmp_path, monkeypatch):
    from rlguard.ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-lm")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    raw = {"trainer": {"model": str(model), "reward": "sentiment", "batch_size": 2, "minibatch_size": 2,
                       "max_new_tokens": 8, "torch_threads": 1, "eval_every": 0, "checkpoint_every": 2,
                       "device": "cpu", "steps": 8},
           "monitors": QUIET_MONITORS,
           "supervisor": dict(FAST_SUPERVISOR, step_timeout_s=120, heartbeat_timeout_s=60, max_restarts=4)}
    run_dir = tmp_path / "run"
    sup = Supervisor(run_dir, parse_run_config(raw), scheduler=False)
    thread, box = run_in_thread(sup)
    kills = []
    try:
        wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 2, 240, "step 2 of the real worker")
        w = sup.live.worker
        os.killpg(w.pgid, signal.SIGKILL)
        kills.append("mid-run")
        wait_for(lambda: sup.live.worker is not None and sup.live.worker.pid != w.pid, 60, "the relaunch")
        w2 = sup.live.worker
        wait_for(lambda: _writing(run_dir) and sup.live.worker is w2, 240, "a checkpoint write", poll=0.005)
        os.killpg(w2.pgid, signal.SIGKILL)
        kills.append("mid-checkpoint-write")
        result = join_supervisor(sup, thread, box, 400)
    finally:
        if thread.is_alive():
            sup.detach("test cleanup")
            time.sleep(0.5)
            if sup.live.worker is not None:
                sup.live.worker.stop(1.0)
    events = read_jsonl(run_dir / "metrics.jsonl")
    launches = [e for e in read_jsonl(run_dir / "journal.jsonl") if e.get("event") == "launch"]
    problems = []
    for launch in launches[1:]:
        first = [e["step"] for e in events if e.get("attempt") == launch["attempt"]][:1]
        resumed = int(launch["resume"].rsplit("-", 1)[1]) if launch.get("resume") else 0
        if first and first[0] != resumed + 1:
            problems.append(f"attempt {launch['attempt']} resumed from {resumed} but began at step {first[0]}")
    record("ppo_worker_kill9", kind="fault", name="kill -9 of the real tiny PPO-max worker (mid-step, "
           "mid-checkpoint-write)", injected=len(kills), survived=len(kills) if not problems and
           result.state is RunState.COMPLETED else 0, data_lost=len(problems))
    assert result.state is RunState.COMPLETED, result.reason
    assert not problems, problems
    assert events[-1]["step"] == 8 and len(launches) == 3
