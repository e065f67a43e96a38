"""kill -9 of the worker at random moments, including in the middle of checkpoint writes.

The supervisor runs in-process (a thread); the chaos worker is a real child process using
the real SDK. After every run the invariants of tests/reliability/chaos_lib.py must hold:
no corrupt checkpoint loaded, metrics/journal readable, steps and data cursor continuous
from the checkpoint each attempt loaded, one outcome per decision.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.ppo.checkpoint_files import CheckpointError, list_checkpoints, verify_checkpoint
from tests.reliability.chaos_lib import (
    check_run,
    join_supervisor,
    metric_count,
    read_jsonl,
    record,
    run_config,
    run_in_thread,
    seeded_rng,
    wait_for,
)
from tests.reliability.chaos_worker import WRITING_MARKER


def writing_pid(run_dir: Path) -> int | None:
    """The pid of the worker inside a checkpoint write right now (chaos_worker's marker file), or None."""
    try:
        return int((run_dir / WRITING_MARKER).read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def events_of_attempt(run_dir: Path, attempt: int) -> int:
    return sum(1 for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("attempt", 0) == attempt)


def chaos_worker_kills(tmp_path: Path, *, kills: int, mid_write_every: int, steps: int, seed: str) -> dict:
    """One run with `kills` kill -9s of the worker; every `mid_write_every`-th lands inside a checkpoint write.

    Returns the figures; raises AssertionError on a broken invariant."""
    rng = seeded_rng(seed)
    run_dir = tmp_path / "run"
    scenario = {"steps": steps, "checkpoint_every": 2, "step_s": 0.02, "ckpt_bytes": 1 << 20, "ckpt_chunk_s": 0.01}
    cfg = parse_run_config(run_config(tmp_path, scenario, supervisor={"max_restarts": kills + 2}))
    sup = Supervisor(run_dir, cfg, serve_http=True, scheduler=False)
    thread, box = run_in_thread(sup)
    mid_write = 0
    killed: list[int] = []
    try:
        for i in range(kills):
            w = wait_for(lambda: sup.live.worker if sup.live.state is RunState.RUNNING and sup.live.worker
                         and sup.live.worker.pid not in killed else None, 60, "the relaunched worker to run")
            attempt = w.attempt
            if mid_write_every and i % mid_write_every == 0:
                # wait until *this* worker is inside a checkpoint write, then kill at a random point of it
                wait_for(lambda pid=w.pid: writing_pid(run_dir) == pid, 60, "a checkpoint write")
                time.sleep(rng.uniform(0.0, 0.12))
                mid_write += 1
            else:
                target = rng.randint(2, 8)
                wait_for(lambda a=attempt, n=target: events_of_attempt(run_dir, a) >= n, 60,
                         f"{target} steps of attempt {attempt}")
                time.sleep(rng.uniform(0.0, 0.03))
            os.killpg(w.pgid, signal.SIGKILL)
            killed.append(w.pid)
        result = join_supervisor(sup, thread, box, 180)
    finally:
        if thread.is_alive():
            sup.detach("test cleanup")
    assert result.state is RunState.COMPLETED, (result.state, result.reason)
    counts, findings = check_run(run_dir)
    # every complete checkpoint directory on disk verifies (a kill never leaves a half-written one visible)
    for p in list_checkpoints(run_dir / "checkpoints"):
        try:
            verify_checkpoint(p)
        except CheckpointError as e:
            findings.append(f"corrupt checkpoint directory visible after a kill: {e}")
    last = [r for r in read_jsonl(run_dir / "metrics.jsonl")][-1]
    if last["step"] != steps:
        findings.append(f"the run ended at step {last['step']}, not {steps}")
    resumed = [e for e in read_jsonl(run_dir / "journal.jsonl") if e.get("event") == "launch" and e.get("resume")]
    return {"resumed_launches": len(resumed), "kills": len(killed), "mid_write": mid_write, "findings": findings, "loads": counts["loads"],
            "events": metric_count(run_dir), "run_dir": run_dir}


def test_random_kill_9s_of_the_worker_including_mid_checkpoint_write_lose_nothing(tmp_path):
    fig = chaos_worker_kills(tmp_path, kills=14, mid_write_every=2, steps=60, seed="worker-kills")
    record("worker_kill9", kind="fault", name="kill -9 of the worker at random moments (half of them inside a "
           "checkpoint write)", injected=fig["kills"], survived=fig["kills"] if not fig["findings"] else 0,
           data_lost=len(fig["findings"]), note=f"{fig['mid_write']} mid-write; {fig['loads']} verified loads")
    assert not fig["findings"], "\n".join(fig["findings"])
    # every relaunch with a checkpoint started from it after verifying it; most relaunches had one
    assert fig["loads"] == fig["resumed_launches"] >= fig["kills"] // 2


def test_killed_checkpoint_writes_leave_no_partial_directories_behind(tmp_path):
    """A kill inside write_checkpoint_dir leaves RUN/checkpoints/.tmp-step-*: it must not pile up."""
    fig = chaos_worker_kills(tmp_path, kills=3, mid_write_every=1, steps=14, seed="partial-dirs")
    leftovers = sorted(p.name for p in (fig["run_dir"] / "checkpoints").iterdir() if p.name.startswith(".tmp-"))
    record("partial_checkpoint_dirs", kind="fault", name="kill -9 inside a checkpoint write: partial directory "
           "cleaned up", injected=fig["kills"], survived=fig["kills"] - len(leftovers), data_lost=len(fig["findings"]),
           note=f"{len(leftovers)} partial .tmp-* directories left on disk")
    assert not fig["findings"], "\n".join(fig["findings"])
    assert leftovers == [], f"{len(leftovers)} partial checkpoint directories left on disk: {leftovers}"
