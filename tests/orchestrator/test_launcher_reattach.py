"""`--resume` reattaches to the worker only if the pid in supervisor.json is still that worker:
a pid reused by another process must never be adopted (and later killpg'd)."""

from __future__ import annotations

import subprocess

from rlguard.orchestrator.launcher import Launcher, process_start_ticks


def _stranger() -> subprocess.Popen:
    """Another process (not our worker), in a group of its own like a worker would be."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_a_pid_now_held_by_another_process_is_not_reattached(tmp_path):
    other = _stranger()
    try:
        ticks = process_start_ticks(other.pid)
        assert ticks is not None
        # supervisor.json of a worker that had this pid before: started at another moment
        info = {"pid": other.pid, "pgid": other.pid, "attempt": 2, "start_ticks": ticks - 1}
        assert Launcher.reattach(info, run_dir=tmp_path) is None
        # a supervisor.json from before start_ticks was recorded: the run dir is not in its environment
        old_info = {"pid": other.pid, "pgid": other.pid, "attempt": 2}
        assert Launcher.reattach(old_info, run_dir=tmp_path) is None
        assert other.poll() is None  # and nothing was signalled
    finally:
        other.kill()
        other.wait()


def test_the_same_worker_is_reattached_by_start_time_or_by_its_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launcher = Launcher(run_dir, tmp_path / "config.yaml", ["sleep", "60"], env={"RLGUARD_RUN_DIR": str(run_dir)})
    worker = launcher.start(1, resume=None, constraints={})
    try:
        info = worker.to_dict()
        assert isinstance(info["start_ticks"], int)
        again = Launcher.reattach(info, run_dir=run_dir)
        assert again is not None and again.pid == worker.pid and again.attempt == 1
        legacy = {k: v for k, v in info.items() if k != "start_ticks"}
        assert Launcher.reattach(legacy, run_dir=run_dir) is not None
        assert Launcher.reattach(legacy, run_dir=tmp_path / "another-run") is None
    finally:
        worker.stop(1)
