"""The disk fills up during a checkpoint save.

The run directory is a small tmpfs mounted by the test (needs root and mount(8); otherwise
the test is skipped with the reason). Checkpoints of 600 KiB fill 3 MiB within a few saves.
Expected: the supervisor survives and says so (the disk check journals `disk_low`), every
checkpoint directory that exists still verifies (a failed save never damages an older one),
and the run either completes or ends with a reason that names the failure.

With no room for even one checkpoint (the built-in worker, a tiny model): every failed write is
journaled as it is reported, and the halt that finds no rollback target says why there is none.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.ppo.checkpoint_files import CheckpointError, list_checkpoints, verify_checkpoint
from tests.reliability.chaos_lib import (
    SupervisorCrashed,
    join_supervisor,
    read_jsonl,
    record,
    run_config,
    run_in_thread,
    wait_for,
)


def mount_small_disk(mnt: Path, size: str = "3m"):
    mnt.mkdir(parents=True)
    if shutil.which("mount") is None:
        pytest.skip("mount(8) not available: cannot build a small disk to fill")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")


# where the small disk is mounted: the whole run directory, or only checkpoints/ (a separate volume)
CASES = [("run", "exit"), ("checkpoints", "continue")]


@pytest.mark.parametrize(("mounted", "on_save_error"), CASES, ids=["whole-run-dir", "checkpoints-volume"])
def test_disk_full_during_a_save_alerts_and_keeps_older_checkpoints_intact(tmp_path, mounted, on_save_error):
    run_dir = tmp_path / "run"
    mnt = run_dir if mounted == "run" else run_dir / "checkpoints"
    mount_small_disk(mnt)
    try:
        check_disk_full(tmp_path, run_dir, mnt, mounted, on_save_error)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def check_disk_full(tmp_path: Path, run_dir: Path, mnt: Path, mounted: str, on_save_error: str) -> None:
    scenario = {"steps": 30, "checkpoint_every": 2, "step_s": 0.03, "ckpt_bytes": 600 << 10, "ckpt_chunk_s": 0.0,
                "save_errors": on_save_error}
    cfg = parse_run_config(run_config(tmp_path / "cfg", scenario, supervisor={
        "max_restarts": 2, "disk_min_free_gb": 0.001,
        "checkpoints": {"confirm_steps": 2, "keep_last": 20, "keep_healthy": 20}}))
    sup = Supervisor(run_dir, cfg, scheduler=True)
    thread, box = run_in_thread(sup)
    try:
        wait_for(lambda: shutil.disk_usage(mnt).free < 600 << 10, 60, "the disk to fill")
        sup._jobs.check_disk()  # the scheduler's disk job, run now instead of in 60 s
        result = join_supervisor(sup, thread, box, 30)  # a healthy end takes ~5 s
        crash = ""
    except SupervisorCrashed as e:
        result, crash = None, str(e).strip().splitlines()[-1]
    except AssertionError as e:  # join_supervisor's deadline: the supervisor neither ended nor died
        result, crash = None, f"never ended ({str(e).splitlines()[0]})"
    finally:
        if thread.is_alive():
            sup.detach("test cleanup")
            thread.join(10)
    if crash and sup.live.worker is not None:
        sup.live.worker.stop(1.0)
    journal = read_jsonl(run_dir / "journal.jsonl")
    disk_alerts = [e for e in journal if e.get("event") == "disk_low"]
    bad = []
    for p in list_checkpoints(run_dir / "checkpoints"):
        try:
            verify_checkpoint(p)
        except CheckpointError as e:
            bad.append(str(e))
    intact = len(list_checkpoints(run_dir / "checkpoints")) - len(bad)
    clear_end = result is not None and (result.state is RunState.COMPLETED or (
        result.state in (RunState.FAILED, RunState.HALTED) and "exit" in result.reason))
    states = [e["state"] for e in journal if e["kind"] == "state"]
    if crash and states:
        crash += f"; journaled states {states[-3:]}"
    errors = [e for e in journal if e.get("event") == "internal_error"]
    if errors:
        crash = crash or f"{len(errors)} internal errors: {errors[0]['message'][:60]}"
    end = f"supervisor: {crash}" if crash else f"{result.state.value}: {result.reason[:80]}"
    record(f"disk_full_{mounted}", kind="fault", name=f"disk full during a checkpoint save ({mounted}/ on a 3 MiB "
           f"disk; the worker {'keeps training' if on_save_error == 'continue' else 'exits'} on the error)",
           injected=1, survived=int(bool(disk_alerts) and not bad and clear_end), data_lost=len(bad),
           note=f"{end}; {intact} older checkpoints intact")
    assert not crash, f"the supervisor failed on a full disk: {crash}"
    assert disk_alerts, "no disk_low alert in the journal"
    assert not bad, bad
    assert intact >= 2
    assert clear_end, (result.state, result.reason)
    assert not any(Path(p).name.startswith(".tmp-") for p in (run_dir / "checkpoints").iterdir()), \
        "a failed save left its partial directory behind"


@pytest.mark.slow
def test_no_room_for_any_checkpoint_is_journaled_and_named_in_the_halt(tmp_path, monkeypatch):
    from rlguard.ppo.tiny import build_tiny_lm
    from tests.orchestrator.harness import FAST_SUPERVISOR, QUIET_MONITORS, run_supervisor

    model = build_tiny_lm(tmp_path / "tiny-lm")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "run"
    mnt = run_dir / "checkpoints"
    mount_small_disk(mnt, "64k")  # room for registry.json, not for one checkpoint of the tiny model
    try:
        monitors = dict(QUIET_MONITORS)
        # every answer is "too short": a critical alert at step 3 (onset 1), with nothing to go back to
        monitors["bounds"] = {"rules": [{"metric": "response_length", "lower": 1e6, "patience_steps": 3,
                                         "severity": "critical"}]}
        raw = {"trainer": {"model": str(model), "reward": "sentiment", "batch_size": 2, "minibatch_size": 2,
                           "max_new_tokens": 4, "torch_threads": 1, "eval_every": 0, "checkpoint_every": 1,
                           "critic_pretrain_steps": 0, "device": "cpu", "steps": 8},
               "monitors": monitors,
               "supervisor": dict(FAST_SUPERVISOR, step_timeout_s=120, heartbeat_timeout_s=60)}
        result = run_supervisor(Supervisor(run_dir, parse_run_config(raw)), timeout_s=240)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    assert result.state is RunState.HALTED, result.reason
    journal = read_jsonl(run_dir / "journal.jsonl")
    failed = [e for e in journal if e.get("event") == "checkpoint_write_failed"]
    assert failed, sorted({e["kind"] for e in journal})
    assert "could not write" in failed[0]["message"] and failed[0]["failures"] >= 1
    counts = [e["failures"] for e in failed]
    assert counts == sorted(set(counts))  # each new failure journaled once
    halt = next(e["decision"] for e in journal if e["kind"] == "decision" and e["decision"]["action"] == "halt")
    assert "no healthy checkpoint before step" in halt["reason"]
    assert "failed (checkpoint_failures: disk full?" in halt["reason"], halt["reason"]
    assert not any(e["kind"] == "checkpoint" for e in journal)  # nothing was announced
