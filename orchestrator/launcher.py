"""Starting, watching and stopping the worker: one child in its own process group.

The worker runs in a new session (its own process group), so that the supervisor can
stop everything it spawned (torchrun and all ranks, dataloader workers) with one killpg,
and so that a Ctrl-C in the supervisor's terminal does not kill the training.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("rlguard.launcher")


def builtin_worker_argv() -> list[str]:
    return ["{python}", "-m", "rlguard.orchestrator.ppo_worker", "--config", "{config}", "--run-dir", "{run_dir}",
            "{resume}", "{overrides}"]


def expand_argv(template: list[str], *, run_dir: Path, config: Path, resume: Path | None,
                overrides: dict, attempt: int) -> list[str]:
    """Fill the placeholders. `{resume}` and `{overrides}` as whole arguments expand to zero or
    more arguments; inside a longer argument they expand to their text."""
    resume_args = ["--resume", str(resume)] if resume else []
    override_args: list[str] = []
    for k, v in sorted(overrides.items()):
        override_args += ["--set", f"{k}={v}"]
    simple = {"{python}": sys.executable, "{run_dir}": str(run_dir), "{config}": str(config),
              "{resume_path}": str(resume or ""), "{attempt}": str(attempt)}
    out: list[str] = []
    for arg in template:
        if arg == "{resume}":
            out += resume_args
        elif arg == "{overrides}":
            out += override_args
        else:
            for key, val in simple.items():
                arg = arg.replace(key, val)
            arg = arg.replace("{resume}", " ".join(resume_args)).replace("{overrides}", " ".join(override_args))
            out.append(arg)
    return out


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited (status unknown: not our child)"
    if returncode == 0:
        return "exited 0"
    if returncode < 0:
        sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if returncode == -signal.SIGKILL else ""
        return f"killed by {sig}{hint}"
    if returncode == 137:  # shells and torchrun report SIGKILLed children as 128+9
        return "exited 137 (SIGKILL: out of memory?)"
    return f"exited {returncode}"


@dataclass
class WorkerProcess:
    """A live worker: our child (popen) or, after a supervisor restart, a pid we reattached to."""

    attempt: int
    pid: int
    pgid: int
    started: float
    argv: list[str] = field(default_factory=list)
    log_path: Path | None = None
    popen: subprocess.Popen | None = None
    killed_by_us: bool = False
    start_ticks: int | None = None  # /proc/PID/stat starttime: tells this process from a later one with its pid

    def poll(self) -> tuple[bool, int | None]:
        """(exited, returncode); returncode None when exited but not our child."""
        if self.popen is not None:
            rc = self.popen.poll()
            return rc is not None, rc
        return not _pid_alive(self.pid), None

    def stop(self, grace_s: float, *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> None:
        """SIGTERM to the whole group, SIGKILL after grace_s. Idempotent."""
        self.killed_by_us = True
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = clock() + grace_s
        while clock() < deadline:
            if self.poll()[0] and not _group_alive(self.pgid):
                return
            sleep(0.05)
        _signal_group(self.pgid, signal.SIGKILL)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def to_dict(self) -> dict:
        return {"attempt": self.attempt, "pid": self.pid, "pgid": self.pgid, "argv": self.argv,
                "log": str(self.log_path) if self.log_path else None, "start_ticks": self.start_ticks}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot; field 22 of /proc/PID/stat), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _environ_has(pid: int, key: str, value: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{key}={value}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def same_worker(pid: int, info: dict, run_dir: Path | None) -> bool:
    """Is `pid` still the worker `info` (supervisor.json) describes, or a later process that got
    its pid? Same start time; for a record without one, this run directory in its environment."""
    recorded = info.get("start_ticks")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return process_start_ticks(pid) == recorded
    return run_dir is not None and _environ_has(pid, "RLGUARD_RUN_DIR", str(run_dir))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class Launcher:
    """Spawns workers for one run directory; logs go to RUN/logs/worker-attempt-N.log."""

    def __init__(self, run_dir: Path, config_path: Path, template: list[str] | None, env: dict[str, str]):
        self.run_dir = run_dir
        self.config_path = config_path
        self.template = template or builtin_worker_argv()
        self.env = env

    def start(self, attempt: int, *, resume: Path | None, constraints: dict, skip_batches: int = 0,
              all_constraints: dict | None = None, clock=time.monotonic) -> WorkerProcess:
        """`constraints` (the values that differ from the config) become `{overrides}`; the
        environment gets every value in force (RLGUARD_CONSTRAINTS), to apply after a resume."""
        argv = expand_argv(self.template, run_dir=self.run_dir, config=self.config_path, resume=resume,
                           overrides=constraints, attempt=attempt)
        env = dict(os.environ)
        env.update(self.env)
        env.update({"RLGUARD_ATTEMPT": str(attempt), "RLGUARD_RESUME": str(resume or ""),
                    "RLGUARD_CONSTRAINTS": json.dumps(all_constraints if all_constraints is not None else constraints), "RLGUARD_SKIP_BATCHES": str(skip_batches),
                    "PYTHONUNBUFFERED": "1"})
        logs = self.run_dir / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"worker-attempt-{attempt}.log"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                     env=env, cwd=os.getcwd(), start_new_session=True)
        return WorkerProcess(attempt=attempt, pid=popen.pid, pgid=popen.pid, started=clock(), argv=argv,
                             log_path=log_path, popen=popen, start_ticks=process_start_ticks(popen.pid))

    @staticmethod
    def reattach(info: dict, clock=time.monotonic, run_dir: Path | None = None) -> WorkerProcess | None:
        """The worker a previous supervisor started, if it is still alive and still that process:
        a pid the kernel has since given to another process must never be signalled."""
        pid = int(info.get("pid") or 0)
        if pid <= 0 or not _pid_alive(pid):
            return None
        if not same_worker(pid, info, run_dir):
            log.warning("pid %d from supervisor.json now belongs to another process: not reattaching", pid)
            return None
        return WorkerProcess(attempt=int(info.get("attempt", 0)), pid=pid, pgid=int(info.get("pgid") or pid),
                             started=clock(), argv=list(info.get("argv") or []),
                             log_path=Path(info["log"]) if info.get("log") else None,
                             start_ticks=process_start_ticks(pid))


def tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a worker log, for the journal entry of a crash."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 8192))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
