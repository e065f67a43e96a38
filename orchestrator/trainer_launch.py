"""Supervising a trainer that has no SDK (verl, OpenRLHF): read its logs, relaunch to act.

Such a trainer takes no commands while it runs. So the supervisor
- reads what it logs: a `LogFeeder` thread per attempt tails the trainer's log, turns lines into
  MetricEvents (one function per format, in the trainer's module), appends them to
  RUN/metrics.jsonl (the record, as the SDK does) and posts them to the supervisor's loop as the
  same `sync` message an SDK worker sends, with the checkpoints the trainer finished meanwhile;
- registers each trainer checkpoint as a *pointer*: RUN/checkpoints/step-N/ (a normal rlguard
  checkpoint directory, so health, holds and retention work unchanged) holding
  trainer-checkpoint.json: the trainer's directories and every file's size and mtime, which
  identify the checkpoint (a later timeline that writes step N again changes them);
- acts by relaunch only: rollback = relaunch resuming from the pointer's directory, with the
  constraints in force as the trainer's own flags (tighten/relax are recorded for that relaunch).

Retention: a trainer that rotates its own checkpoints could delete a rollback target. The
launchers switch that rotation off and, where the user had asked for rotation, delete a
trainer checkpoint when the registry prunes its pointer (`on_pruned`), which never happens to
a held target, the last healthy one or a pending one (orchestrator/registry.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.launcher import Launcher, WorkerProcess, process_start_ticks
from rlguard.ppo.checkpoint_files import checkpoint_dir_name, write_checkpoint_dir

log = logging.getLogger("rlguard.trainer_launch")

POINTER_FILE = "trainer-checkpoint.json"
SIDECAR_DIR = "trainer-checkpoints"  # RUN/trainer-checkpoints/step-N.json: survives the pointer's pruning


# ============================================================ pointers to trainer checkpoints

def file_listing(dirs: list[Path]) -> dict[str, list[int]]:
    """{absolute file path: [bytes, mtime_ns]} of every file under `dirs`."""
    out: dict[str, list[int]] = {}
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


def write_pointer(run_dir: Path, trainer: str, step: int, resume_path: Path, dirs: list[Path],
                  constraints: dict) -> Path:
    """Register trainer checkpoint `step` as RUN/checkpoints/step-N (atomic) plus its sidecar."""
    payload = {"trainer": trainer, "step": int(step), "resume_path": str(resume_path),
               "dirs": [str(d) for d in dirs], "files": file_listing(dirs)}
    text = json.dumps(payload, indent=1)
    sidecar = run_dir / SIDECAR_DIR
    sidecar.mkdir(exist_ok=True)
    tmp = sidecar / f".step-{step}.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, sidecar / f"step-{step}.json")
    return write_checkpoint_dir(run_dir / "checkpoints" / checkpoint_dir_name(step),
                                lambda d: (d / POINTER_FILE).write_text(text), step=step,
                                constraints=constraints, meta={"trainer": trainer, "resume_path": str(resume_path)})


def read_pointer(pointer_dir: Path) -> dict:
    try:
        return json.loads((Path(pointer_dir) / POINTER_FILE).read_text())
    except (OSError, ValueError) as e:
        raise OSError(f"{pointer_dir} is not a trainer checkpoint pointer ({e}); roll back to a checkpoint the "
                      "launcher registered") from None


def pointer_problem(payload: dict) -> str:
    """"" when every file of the trainer checkpoint is as registered, else what changed."""
    for path, (size, mtime_ns) in payload.get("files", {}).items():
        try:
            st = os.stat(path)
        except OSError:
            return f"{path} is gone"
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return f"{path} changed since step {payload.get('step')} was registered (written again?)"
    if not payload.get("files"):
        return "the checkpoint had no files"
    return ""


class ResumeTargetError(OSError):
    """The trainer checkpoint to resume from is gone or was rewritten; restarts.relaunch marks it
    CORRUPT and falls back to the next older healthy one."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.checkpoint_step = step


def resume_target(pointer_dir: Path) -> tuple[Path, dict]:
    """The trainer directory to resume from, checked against the registered listing."""
    payload = read_pointer(pointer_dir)
    problem = pointer_problem(payload)
    if problem:
        raise ResumeTargetError(int(payload.get("step", -1)), f"cannot resume from step {payload.get('step')}: "
                                f"{problem}")
    return Path(payload["resume_path"]), payload


# ============================================================ reading the trainer's log

class LogFeeder:
    """Tails one attempt's log; posts its events and new checkpoints to the supervisor's loop.

    The first post comes with the first metric line or checkpoint (until then the supervisor's
    startup_timeout_s applies: Ray start, model loading and the first step); after that a
    heartbeat post every heartbeat_s while nothing new arrives, so that the supervisor's
    step_timeout_s, not its heartbeat timeout, judges a trainer that stops making steps.
    """

    def __init__(self, *, attempt: int, log_path: Path, to_event: Callable[[bytes, int], MetricEvent | None],
                 find_checkpoints: Callable[[], list[dict]], post: Callable[[str, dict], object],
                 metrics_path: Path | None, heartbeat_s: float, poll_s: float, skip_through: int = -1,
                 clock: Callable[[], float] = time.monotonic):
        self.attempt, self.log_path, self.to_event = attempt, Path(log_path), to_event
        self.skip_through = skip_through  # steps already in the record (a reattach reads the log again)
        self.find_checkpoints, self.post, self.metrics_path = find_checkpoints, post, metrics_path
        self.heartbeat_s, self.poll_s, self.clock = heartbeat_s, poll_s, clock
        self.offset = 0
        self.partial = b""
        self.seen_output = False
        self.last_post = 0.0
        self.bad_lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-feeder-{attempt}", daemon=True)

    def start(self) -> LogFeeder:
        self._thread.start()
        return self

    def finish(self) -> None:
        """The trainer exited: read what it wrote last, post it, stop. Called on the loop thread
        before the exit is handled, so the last step and checkpoint count."""
        self._stop.set()
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._turn(final=True)

    def stop(self) -> None:
        """Stop reading without a last turn (the supervisor detaches; the trainer goes on)."""
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._turn()
            except Exception:  # a reader bug must not end supervision: log and read on
                log.exception("reading %s failed; retrying", self.log_path)

    def _new_lines(self, final: bool) -> list[bytes]:
        try:
            with open(self.log_path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:  # truncated (a trainer reopened it with "wb")
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an incomplete last line waits for its newline...
        if final and self.partial.strip():  # ...unless the writer is gone
            lines.append(self.partial)
            self.partial = b""
        return [x for x in lines if x.strip()]

    def _turn(self, final: bool = False) -> None:
        events = []
        for line in self._new_lines(final):
            try:
                ev = self.to_event(line, self.attempt)
            except ValueError:
                self.bad_lines += 1
                continue
            if ev is not None and ev.step > self.skip_through:
                events.append(ev)
                self.skip_through = -1  # past the recorded ones: a later step N again is a new record
        checkpoints = self.find_checkpoints()
        if events and self.metrics_path is not None:
            with open(self.metrics_path, "a") as f:  # the record, as an SDK worker keeps it
                f.write("".join(e.to_json() + "\n" for e in events))
        if events or checkpoints:
            self.seen_output = True
        now = self.clock()
        if events or checkpoints or (self.seen_output and not final and now - self.last_post >= self.heartbeat_s):
            self.post("sync", {"attempt": self.attempt, "events": [e.to_dict() for e in events],
                               "checkpoints": checkpoints})
            self.last_post = now


@dataclass
class TrainerWorker(WorkerProcess):
    """A trainer process with its log feeder: it counts as exited only once the feeder has
    posted the trainer's last lines."""

    feeder: LogFeeder | None = None

    def poll(self) -> tuple[bool, int | None]:
        exited, rc = super().poll()
        if exited and self.feeder is not None:
            feeder, self.feeder = self.feeder, None
            feeder.finish()
        return exited, rc

    def stop_reading(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()
            self.feeder = None


# ============================================================ the launcher base

class TrainerLauncher(Launcher):
    """Starts one trainer attempt (argv from `build`) and its LogFeeder. Subclasses: verl, OpenRLHF."""

    trainer = ""
    accepts_commands = False       # acting.py: tighten/relax recorded for the relaunch, halt = stop the group
    knobs_from_command_line = True  # supervisor.py: the knobs in force are ours, not read back from the log

    def __init__(self, run_dir: Path, config_path: Path, section, env: dict[str, str]):
        super().__init__(run_dir, config_path, None, env)
        self.section = section
        self.post: Callable[[str, dict], object] = lambda kind, payload: None
        self.heartbeat_s = 2.0
        self.initial: dict[str, float] = {}

    def bind(self, post: Callable[[str, dict], object], heartbeat_s: float) -> None:
        self.post, self.heartbeat_s = post, heartbeat_s

    # -- what a subclass provides
    def initial_constraints(self) -> dict[str, float]:
        raise NotImplementedError

    def build(self, attempt: int, target: Path | None, from_start: bool, changed: dict) -> tuple[list[str], dict]:
        """(argv, extra env) of one attempt. target: the trainer checkpoint to resume from;
        from_start: a relaunch that must not resume anything."""
        raise NotImplementedError

    def log_to_read(self, attempt: int) -> Path:
        raise NotImplementedError

    def line_to_event(self, line: bytes, attempt: int) -> MetricEvent | None:
        raise NotImplementedError

    def checkpoint_finder(self, attempt: int, constraints: dict, rescan: bool = False) -> Callable[[], list[dict]]:
        """A callable returning the checkpoints finished since the last call ([{"step", "path"}]).
        Its baseline is what is on disk now (rescan: nothing, so the newest counts once more)."""
        raise NotImplementedError

    def prepare_resume(self, target: Path, payload: dict) -> None:
        """Anything on disk the trainer needs to resume from `target` (OpenRLHF: its `latest` tags)."""

    def owns_retention(self) -> bool:
        """True when the user asked the trainer to rotate checkpoints: rlguard's retention does it instead."""
        return False

    def describe(self) -> str:
        """One line for the journal at each launch: what the launcher changed and why."""
        return ""

    # -- the Launcher interface
    def start(self, attempt: int, *, resume: Path | None, constraints: dict, skip_batches: int = 0,
              all_constraints: dict | None = None, clock=time.monotonic) -> WorkerProcess:
        if not self.initial:
            self.initial = self.initial_constraints()
        target = None
        if resume is not None:
            target, payload = resume_target(resume)
            self.prepare_resume(target, payload)
        in_force = {**self.initial, **(all_constraints or {}), **constraints}
        changed = {k: v for k, v in in_force.items() if k in self.initial and self.initial[k] != v}
        argv, extra_env = self.build(attempt, target, resume is None and attempt > 0, changed)
        log_path = self.run_dir / "logs" / f"worker-attempt-{attempt}.log"
        log_path.parent.mkdir(exist_ok=True)
        finder = self.checkpoint_finder(attempt, in_force)  # its baseline is taken before the trainer starts
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra_env)
        # RLGUARD_RUN_DIR: a later supervisor tells this trainer from a process that reused its pid
        env.update({"RLGUARD_ATTEMPT": str(attempt), "PYTHONUNBUFFERED": "1", "RLGUARD_RUN_DIR": str(self.run_dir)})
        # The wrapper records how the trainer ended (RUN/worker-status.json) for a supervisor that
        # is not running at that moment (orchestrator/trainer_exit.py); argv (journaled) is the trainer's.
        wrapped = [sys.executable, "-m", "rlguard.orchestrator.trainer_exit", "--status",
                   str(self.run_dir / "worker-status.json"), "--attempt", str(attempt), "--", *argv]
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                     env=env, cwd=os.getcwd(), start_new_session=True)
        feeder = LogFeeder(attempt=attempt, log_path=self.log_to_read(attempt), to_event=self.line_to_event,
                           find_checkpoints=finder, post=self.post, metrics_path=self.run_dir / "metrics.jsonl",
                           heartbeat_s=self.heartbeat_s, poll_s=self.section.poll_s).start()
        return TrainerWorker(attempt=attempt, pid=popen.pid, pgid=popen.pid, started=clock(), argv=argv,
                             log_path=log_path, popen=popen, feeder=feeder, start_ticks=process_start_ticks(popen.pid))

    def reattach(self, info: dict, clock=time.monotonic, run_dir: Path | None = None) -> WorkerProcess | None:
        """A trainer a previous supervisor started, still alive: read its log again, skipping the
        steps RUN/metrics.jsonl already holds; re-register its newest checkpoint (it may have been
        written while no supervisor ran)."""
        w = Launcher.reattach(info, clock=clock, run_dir=run_dir)
        if w is None:
            return None
        if not self.initial:
            self.initial = self.initial_constraints()
        feeder = LogFeeder(attempt=w.attempt, log_path=self.log_to_read(w.attempt), to_event=self.line_to_event,
                           find_checkpoints=self.checkpoint_finder(w.attempt, {}, rescan=True), post=self.post,
                           metrics_path=self.run_dir / "metrics.jsonl", heartbeat_s=self.heartbeat_s,
                           poll_s=self.section.poll_s, skip_through=_last_recorded_step(
                               self.run_dir / "metrics.jsonl", w.attempt)).start()
        return TrainerWorker(attempt=w.attempt, pid=w.pid, pgid=w.pgid, started=w.started, argv=w.argv,
                             log_path=w.log_path, feeder=feeder, start_ticks=w.start_ticks)

    def on_pruned(self, step: int) -> str:
        """The registry pruned step N's pointer: delete the trainer's checkpoint too when rlguard
        owns retention and the files are still the ones registered. Returns a line for the journal."""
        sidecar = self.run_dir / SIDECAR_DIR / f"step-{step}.json"
        try:
            payload = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return ""
        if not self.owns_retention():
            sidecar.unlink(missing_ok=True)
            return ""
        problem = pointer_problem(payload)
        if problem:
            sidecar.unlink(missing_ok=True)
            return f"{self.trainer} checkpoint step {step} left on disk: {problem}"
        for d in payload["dirs"]:
            _delete_tree(Path(d))
        sidecar.unlink(missing_ok=True)
        return f"deleted {self.trainer} checkpoint step {step} ({', '.join(payload['dirs'])}): pruned by retention"


def _last_recorded_step(metrics_path: Path, attempt: int) -> int:
    last = -1
    try:
        with open(metrics_path, "rb") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if isinstance(d, dict) and d.get("attempt") == attempt and isinstance(d.get("step"), int):
                    last = d["step"]
    except OSError:
        pass
    return last


def _delete_tree(path: Path) -> None:
    """Rename to a hidden trash name first (atomic: never a half-deleted checkpoint), then remove."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def format_number(v: float) -> str:
    """A knob value for a command line: 0.0015, 5e-07 (no float noise)."""
    return f"{float(v):.12g}"


def file_stamp(path: Path):
    """(mtime, size, inode) of a file, None when it is gone: tells a rewritten checkpoint tag from the old one."""
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size, st.st_ino
    except OSError:
        return None
