"""The worker SDK: a few lines that make any training script supervisable.

    from rlguard.orchestrator.sdk import connect
    client = connect(run_dir="runs/x")          # supervised if RLGUARD_CONTROL is set
    for step in range(start, steps):
        metrics = train_one_step()
        client.report(step, metrics)             # appends RUN/metrics.jsonl + tells the supervisor
        for cmd in client.commands(step):        # applied at this step boundary
            ...                                  # set_constraints / save / load / stop / evaluate
        if saved: client.checkpoint_written(step, path)
    client.close()

Responsibilities and rules:
- The worker ALWAYS appends its events to RUN/metrics.jsonl itself: that file is the record,
  whether or not a supervisor listens.
- Without a supervisor (no RLGUARD_CONTROL) the client is standalone: `commands()` returns
  [] and nothing is sent anywhere, so scripts run unchanged outside rlguard.
- Transport: JSON over HTTP POST to the supervisor on 127.0.0.1 (stdlib http.client only, short
  timeouts). Each `report()` sends the buffered events and waits for the supervisor to have
  processed them, so commands decided from step N arrive at step N's boundary. The wait is
  bounded by max(RLGUARD_SYNC_WAIT_S, RLGUARD_SYNC_WAIT_FRACTION x the last step's duration),
  at most 60 s: a supervisor slowed by load (its monitors, policies and sinks on a busy
  machine) still answers before a 100 s step ends, and a fast step pays nothing more, because
  the reply comes as soon as the events are handled. The reply says whether they were
  (`handled`); if not, the client asks again (FIFO: an answered follow-up means the events
  were handled too) until the budget is spent, and only then goes on (counted in late_syncs).
- A supervisor that goes away never stops training: sends fail fast, events stay in a
  bounded buffer (oldest dropped and counted: metrics.jsonl still has them), retries are
  spaced out, and RUN/supervisor.json is re-read so a restarted supervisor is found again
  (on loopback or RLGUARD_CONTROL's host only: the token is never sent to another host that
  file names).
- `pause` is handled here: `commands()` blocks until `resume` or `stop` arrives (heartbeats
  keep flowing from a background thread). A pause whose supervisor vanished for longer than
  RLGUARD_PAUSE_ORPHAN_S ends by itself, because nobody would ever resume it.
- Heartbeats from a daemon thread carry the age of the main thread's last sign of progress,
  so the supervisor can tell a frozen process (no heartbeats) from a hung loop (stale age).
- Multi-rank (torchrun): rank 0 talks to the supervisor and writes metrics.jsonl; if
  torch.distributed is initialized, `commands()` broadcasts rank 0's commands to every rank
  so all ranks obey the same command at the same step.

Environment set by the supervisor: RLGUARD_CONTROL (base URL), RLGUARD_TOKEN, RLGUARD_RUN_DIR,
RLGUARD_ATTEMPT, RLGUARD_RESUME (checkpoint to start from, or empty), RLGUARD_CONSTRAINTS
(JSON of constraint values to apply at start), RLGUARD_SKIP_BATCHES (batches to skip after
loading RLGUARD_RESUME), RLGUARD_HEARTBEAT_S, RLGUARD_SYNC_WAIT_S, RLGUARD_SYNC_WAIT_FRACTION.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.commands import Ack, Command, CommandKind
from rlguard.orchestrator.http_guard import token_destination_problem
from rlguard.ppo.checkpoint_files import fsync_path

log = logging.getLogger("rlguard.sdk")

BUFFER_MAX_EVENTS = 10_000  # bounded: a long-gone supervisor must not grow the worker's memory
RETRY_AFTER_FAILURE_S = 5.0  # after a failed send, do not pay a timeout again for this long
PAUSE_POLL_S = 0.2
MAX_SYNC_WAIT_S = 60.0  # the supervisor caps a sync's wait at this too


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number of seconds") from None


class WorkerClient:
    """The worker's side of the control channel (one per process). See the module docstring."""

    def __init__(self, run_dir: str | Path, *, url: str = "", token: str = "", attempt: int = 0,
                 resume: str = "", constraints: dict | None = None, skip_batches: int = 0, heartbeat_s: float = 2.0,
                 sync_wait_s: float = 5.0, sync_wait_fraction: float = 0.1, rank: int = 0,
                 clock=time.monotonic, sleep=time.sleep):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.url = url.rstrip("/")
        self._configured_host = urllib.parse.urlsplit(self.url).hostname if url else None
        self._refused_url = ""  # the foreign URL last refused (logged once)
        self.token = token
        self.attempt = attempt
        self.resume_path = resume or None
        self.skip_batches = skip_batches
        self.initial_constraints = dict(constraints or {})
        self.rank = rank
        self.supervised = bool(url) and rank == 0
        self.dropped_events = 0
        self.send_failures = 0
        self._clock = clock
        self._sleep = sleep
        self._sync_wait_s = sync_wait_s
        self._sync_wait_fraction = sync_wait_fraction
        self._step_started = clock()  # end of the last step boundary: the next report times the step
        self.last_step_s: float | None = None
        self.late_syncs = 0  # reports whose events the supervisor had not handled when the wait ran out
        self._last_handled = True
        self._heartbeat_s = heartbeat_s
        self._events: collections.deque[dict] = collections.deque()
        self._checkpoints: list[dict] = []
        self._acks: list[Ack] = []
        self._given: list[Command] = []  # handed to the script, implicitly acked at next sync
        self._inbox: list[Command] = []
        self._lock = threading.Lock()  # guards the buffers; the HTTP call happens outside it
        self._send_lock = threading.Lock()
        self._last_step: int | None = None
        self._attempt_before_load: int | None = None
        self._last_progress = clock()
        self._retry_at = 0.0
        self._paused = False
        self._closed = False
        self._metrics_file = _open_for_append(self.run_dir / "metrics.jsonl") if rank == 0 else None
        self._conns = threading.local()  # kept-alive HTTP connection per thread
        self._synced_this_step = False
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        if self.supervised and heartbeat_s > 0:
            self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="rlguard-heartbeat",
                                                      daemon=True)
            self._heartbeat_thread.start()

    # ----------------------------------------------------------------- public API

    def report(self, step: int, metrics: dict, *, time_s: float | None = None) -> None:
        """Record one step's metrics (METRICS.md names) and send them to the supervisor."""
        event = MetricEvent(step=int(step), metrics=dict(metrics), time=time.time() if time_s is None else time_s,
                            attempt=self.attempt)
        if self._metrics_file is not None:
            self._metrics_file.write(event.to_json() + "\n")
            self._metrics_file.flush()
        self._last_step = int(step)
        self.last_step_s = max(0.0, self._clock() - self._step_started)
        self._touch()
        if not self.supervised:
            return
        with self._lock:
            self._events.append(event.to_dict())
            while len(self._events) > BUFFER_MAX_EVENTS:
                self._events.popleft()
                self.dropped_events += 1
        # The reply carries the commands decided from this step: commands() needs no second trip.
        self._synced_this_step = self._sync_until_handled()

    def sync_wait_budget_s(self) -> float:
        """How long a report may wait for the supervisor: see the module docstring."""
        by_step = self._sync_wait_fraction * (self.last_step_s or 0.0)
        return min(MAX_SYNC_WAIT_S, max(self._sync_wait_s, by_step))

    def _sync_until_handled(self) -> bool:
        """Send this step's events and wait (within the budget) until the supervisor has handled them."""
        deadline = self._clock() + self.sync_wait_budget_s()
        ok = self._sync(wait=True, wait_s=deadline - self._clock())
        while ok and not self._last_handled:
            left = deadline - self._clock()
            if left <= 0.01:
                self.late_syncs += 1
                log.warning("rlguard: the supervisor had not handled step %s within %.1f s; going on (commands "
                            "decided from it arrive at a later boundary)", self._last_step, self.sync_wait_budget_s())
                break
            # FIFO on the supervisor's side: once this follow-up is handled, the events before it were too.
            ok = self._sync(wait=True, wait_s=left, force_wait=True)
        return ok

    def checkpoint_written(self, step: int, path: str | Path) -> None:
        """Announce a complete checkpoint directory (written atomically) for `step`."""
        self._touch()
        if not self.supervised:
            return
        with self._lock:
            self._checkpoints.append({"step": int(step), "path": str(Path(path).resolve())})
        self._sync(wait=False)

    def commands(self, step: int | None = None) -> list[Command]:
        """Commands to apply at this step boundary. Blocks while the run is paused."""
        self._touch()
        cmds: list[Command] = []
        if self.supervised:
            if not self._synced_this_step:
                self._sync(wait=False)
            self._synced_this_step = False
            cmds = self._take_inbox()
            if any(c.kind is CommandKind.PAUSE for c in cmds):
                cmds = self._wait_while_paused(cmds)
        cmds = self._broadcast(cmds)
        self._step_started = self._clock()
        with self._lock:
            self._given.extend(c for c in cmds if c.id and c.kind is not CommandKind.PAUSE)
        for c in cmds:
            if c.kind is CommandKind.LOAD and "attempt" in c.params:
                # Events after an in-process rollback belong to the next attempt (undone by a failed ack).
                self._attempt_before_load, self.attempt = self.attempt, int(c.params["attempt"])
        return [c for c in cmds if c.kind not in (CommandKind.PAUSE, CommandKind.RESUME)]

    def done(self, command: Command, ok: bool = True, detail: str = "") -> None:
        """Acknowledge a command explicitly (use ok=False when it could not be applied)."""
        if command.kind is CommandKind.LOAD and not ok and self._attempt_before_load is not None:
            self.attempt = self._attempt_before_load  # still the old timeline
        with self._lock:
            self._given = [c for c in self._given if c.id != command.id]
            self._acks.append(Ack(command.id, ok, detail, self._last_step))
        if command.kind is CommandKind.LOAD and self.supervised:
            self._sync(wait=False)  # a rollback's outcome is journaled when it happened, not a step later

    def heartbeat(self) -> None:
        """Mark progress from inside a long step (e.g. between generation and optimisation)."""
        self._touch()

    def close(self, status: str = "completed") -> None:
        """Flush, tell the supervisor how the worker ends, stop the heartbeat thread."""
        if self._closed:
            return
        self._closed = True
        if self.supervised:
            self._retry_at = 0.0
            self._sync(wait=False, status=status)
        self._stop_heartbeat.set()
        if self._metrics_file is not None:
            self._metrics_file.close()
        if self.rank == 0:
            # For a supervisor that reattaches after we are gone: how did this worker end?
            status_doc = {"attempt": self.attempt, "pid": os.getpid(), "status": status,
                          "step": self._last_step, "time": time.time()}
            tmp = self.run_dir / f".worker-status.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(status_doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.run_dir / "worker-status.json")
            fsync_path(self.run_dir)  # durable rename: a supervisor reading it after a power cut sees it

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("completed" if exc_type is None else "failed")

    # ----------------------------------------------------------------- transport

    def _touch(self) -> None:
        self._last_progress = self._clock()

    def _take_inbox(self) -> list[Command]:
        with self._lock:
            cmds, self._inbox = self._inbox, []
        return cmds

    def _wait_while_paused(self, cmds: list[Command]) -> list[Command]:
        """Block until resume/stop; returns the non-pause commands received meanwhile."""
        self._paused = True
        kept = [c for c in cmds if c.kind is not CommandKind.PAUSE]
        with self._lock:  # acknowledged now: a long pause is not a command the worker failed to apply
            self._acks += [Ack(c.id, True, "paused", self._last_step) for c in cmds if c.kind is CommandKind.PAUSE]
        orphan_s = _env_float("RLGUARD_PAUSE_ORPHAN_S", 600.0)
        unreachable_since: float | None = None
        try:
            while not any(c.kind in (CommandKind.RESUME, CommandKind.STOP) for c in kept):
                self._sleep(PAUSE_POLL_S)
                self._retry_at = min(self._retry_at, self._clock() + 1.0)
                if self._sync(wait=False):
                    unreachable_since = None
                else:
                    unreachable_since = unreachable_since or self._clock()
                    if self._clock() - unreachable_since > orphan_s:
                        log.warning("rlguard: paused, but the supervisor is gone for %.0f s: resuming", orphan_s)
                        break
                kept.extend(c for c in self._take_inbox() if c.kind is not CommandKind.PAUSE)
                self._touch()
        finally:
            self._paused = False
        return kept

    def _post(self, path: str, body: dict, timeout: float) -> dict | None:
        """POST JSON over a kept-alive connection (one per thread); any failure drops it."""
        data = json.dumps(body, allow_nan=True).encode()
        parts = urllib.parse.urlsplit(self.url)
        key = (parts.hostname, parts.port)
        conn = getattr(self._conns, "conn", None)
        if conn is None or getattr(self._conns, "key", None) != key:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.conn, self._conns.key = conn, key
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                           "Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conns.conn = None
            raise
        if resp.status != 200:
            raise OSError(f"supervisor answered {resp.status} to {path}: {payload[:200]!r}")
        return json.loads(payload or b"{}")

    def _backing_off(self) -> bool:
        """True while a recent failure says "do not pay a timeout again yet", unless
        supervisor.json meanwhile names a new address (a restarted supervisor): that one is
        tried at once, so a reattach does not leave the worker silent for the back-off."""
        if self._clock() >= self._retry_at:
            return False
        old_url = self.url
        self._rediscover()
        if self.url != old_url:
            self._retry_at = 0.0
            return False
        return True

    def _rediscover(self) -> None:
        """A restarted supervisor listens on a new port: read it from RUN/supervisor.json."""
        try:
            info = json.loads((self.run_dir / "supervisor.json").read_text())
            url = str(info.get("url") or "").rstrip("/")
        except (OSError, ValueError, AttributeError):
            return
        if not url or url == self.url:
            return
        problem = token_destination_problem(url, self._configured_host)
        if problem:  # keep buffering for our own supervisor; say why once
            if url != self._refused_url:
                log.error("rlguard: %s/supervisor.json names %s", self.run_dir, problem)
                self._refused_url = url
            return
        self.url = url

    def _sync(self, *, wait: bool, status: str = "running", wait_s: float | None = None,
              force_wait: bool = False) -> bool:
        """Send what is buffered, receive commands. Never raises; False when unreachable.

        `wait`: the supervisor waits up to `wait_s` (default RLGUARD_SYNC_WAIT_S) for the batch to
        be handled when it carries events, or always with `force_wait` (a follow-up)."""
        if self._backing_off():
            return False
        with self._send_lock:
            return self._sync_unlocked(wait=wait, status=status, _retried=False,
                                       wait_s=self._sync_wait_s if wait_s is None else max(0.0, wait_s),
                                       force_wait=force_wait)

    def _sync_unlocked(self, *, wait: bool, status: str, _retried: bool = True, wait_s: float = 0.0,
                       force_wait: bool = False) -> bool:
        """One send; on failure, one immediate retry if supervisor.json names a new address."""
        with self._lock:
            events = list(self._events)
            checkpoints = list(self._checkpoints)
            acks = self._acks + [Ack(c.id, True, "applied", self._last_step) for c in self._given]
            self._given = []
            self._acks = []
        body = {"attempt": self.attempt, "pid": os.getpid(), "step": self._last_step, "status": status,
                "events": events, "checkpoints": checkpoints, "acks": [a.to_dict() for a in acks],
                "paused": self._paused, "wait_s": wait_s if wait and (events or force_wait) else 0.0}
        try:
            reply = self._post("/api/worker/sync", body, timeout=2.0 + body["wait_s"])
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.send_failures += 1
            with self._lock:  # put the acks back; events/checkpoints were never removed
                self._acks = acks + self._acks
            old_url = self.url
            self._rediscover()
            if self.url != old_url and not _retried:  # a restarted supervisor: try it at once
                return self._sync_unlocked(wait=wait, status=status, wait_s=wait_s, force_wait=force_wait)
            self._retry_at = self._clock() + RETRY_AFTER_FAILURE_S
            log.debug("rlguard: supervisor unreachable (%s); buffering", e)
            return False
        # An older supervisor does not say: assume handled (the old behaviour).
        self._last_handled = bool((reply or {}).get("handled", True))
        with self._lock:
            for _ in range(min(len(events), len(self._events))):
                self._events.popleft()
            del self._checkpoints[: len(checkpoints)]
            for d in (reply or {}).get("commands", []):
                try:
                    self._inbox.append(Command.from_dict(d))
                except ValueError as e:  # a newer supervisor speaking a kind we do not know
                    self._acks.append(Ack(str(d.get("id", "")), False, str(e), self._last_step))
        return True

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self._heartbeat_s):
            if self._backing_off():
                continue
            body = {"attempt": self.attempt, "pid": os.getpid(), "step": self._last_step,
                    "progress_age_s": self._clock() - self._last_progress, "paused": self._paused}
            try:
                self._post("/api/worker/heartbeat", body, timeout=2.0)
            except (OSError, http.client.HTTPException, ValueError):
                self._rediscover()

    def _broadcast(self, cmds: list[Command]) -> list[Command]:
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
            return cmds
        box = [[c.to_dict() for c in cmds] if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return [Command.from_dict(d) for d in box[0]]


def _open_for_append(path: Path):
    """Append mode, after ending a torn last line (a worker killed mid-write) with a newline,
    so that our first event is a line of its own and not lost glued to the torn one."""
    f = open(path, "a+b")
    if f.tell() > 0:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    f.close()
    return open(path, "a")


def connect(run_dir: str | Path | None = None) -> WorkerClient:
    """The client for this process, configured from the RLGUARD_* environment.

    `run_dir` is used when the supervisor did not set RLGUARD_RUN_DIR (standalone runs).
    """
    env = os.environ
    rd = env.get("RLGUARD_RUN_DIR") or (str(run_dir) if run_dir is not None else "")
    if not rd:
        raise ValueError("connect(): no run directory: pass run_dir=... or set RLGUARD_RUN_DIR")
    try:
        constraints = json.loads(env.get("RLGUARD_CONSTRAINTS") or "{}")
    except ValueError:
        raise ValueError("RLGUARD_CONSTRAINTS is not JSON (expected e.g. {\"kl_coef\": 0.05})") from None
    return WorkerClient(
        rd,
        url=env.get("RLGUARD_CONTROL", ""),
        token=env.get("RLGUARD_TOKEN", ""),
        attempt=int(env.get("RLGUARD_ATTEMPT") or 0),
        resume=env.get("RLGUARD_RESUME", ""),
        constraints=constraints,
        skip_batches=int(env.get("RLGUARD_SKIP_BATCHES") or 0),
        heartbeat_s=_env_float("RLGUARD_HEARTBEAT_S", 2.0),
        sync_wait_s=_env_float("RLGUARD_SYNC_WAIT_S", 5.0),
        sync_wait_fraction=_env_float("RLGUARD_SYNC_WAIT_FRACTION", 0.1),
        rank=int(env.get("RANK") or 0),
    )
