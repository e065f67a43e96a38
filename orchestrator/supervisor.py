"""The supervisor: one loop that watches a training worker and keeps the run healthy.

    observe  worker events, checkpoint notices, acks, heartbeats, operator requests, timers
    detect   MonitorStack.update(event) -> alerts
    decide   PolicyEngine.decide(step, alerts, view) -> decisions
    act      commands at the worker's next step boundary, or kill + relaunch
    record   journal (decided BEFORE acting, outcome after) and sinks

All decisions happen on the loop thread; the HTTP and scheduler threads only post
messages to `inbox`. The restart budget is spent in exactly one place (`restarts.relaunch`).
Clock and sleep are injected. See RunState (orchestrator/state.py) for the transitions and
ExitCode for what `rlguard run` returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlguard.monitors.events import BadEvent, MetricEvent, event_from_dict
from rlguard.orchestrator import liveness, periodic, recovery, restarts
from rlguard.orchestrator.acting import carry_out, on_command_outcome
from rlguard.orchestrator.commands import Ack, Command, CommandKind
from rlguard.orchestrator.launcher import WorkerProcess, describe_exit
from rlguard.orchestrator.live import PendingApproval
from rlguard.orchestrator.operator import build_status, handle_operator
from rlguard.orchestrator.registry import RegistryError
from rlguard.orchestrator.run_context import RunContext, make_launcher
from rlguard.orchestrator.spec import RunConfig
from rlguard.orchestrator.state import ExitCode, RunResult, RunState

log = logging.getLogger("rlguard.supervisor")


@dataclass
class Message:
    """One thing for the loop to handle; `reply` is set by the loop when the sender waits."""

    kind: str
    payload: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    reply: object = None
    on_done: Callable[[], None] | None = None  # called on the loop thread once handled


class Supervisor(RunContext):
    """Runs one supervised training run in `run_dir` (see orchestrator/run_cli.py for the CLI).

    The shared state and the small operations on it are the RunContext's; this class adds the
    loop, the thread-safe surface the HTTP server and the scheduler use, and start/stop."""

    def __init__(self, run_dir: str | Path, config: RunConfig, *, sinks: list | None = None,
                 extra_routes: list | None = None, monitors=None, engine=None, resume: bool = False,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, serve_http: bool = True, scheduler: bool = True):
        super().__init__(run_dir, config, sinks=sinks, monitors=monitors, engine=engine, resume=resume,
                         clock=clock, wall=wall, sleep=sleep)
        self.inbox: queue.Queue[Message] = queue.Queue()
        self._extra_routes = list(extra_routes or [])
        self._serve_http = serve_http
        self._use_scheduler = scheduler
        self._http = None
        self._jobs: periodic.PeriodicJobs | None = None
        self._status: dict = {"state": RunState.INIT.value}
        self._status_lock = threading.Lock()
        self.internal_errors = 0

    # ================================================================ lifecycle

    def run(self) -> RunResult:
        try:
            self._start()
            while not self.live.state.is_final:
                self.iterate()
            return self.result()
        finally:
            self._shutdown()

    def iterate(self, timeout: float | None = None) -> None:
        """One turn of the loop: handle one message (or time out), then worker exit and timers."""
        try:
            msg = self.inbox.get(timeout=self.sc.tick_s if timeout is None else timeout)
        except queue.Empty:
            msg = None
        try:
            if msg is not None:
                self.handle(msg)
            self._check_worker_exit()
            liveness.check_timers(self)
            self._publish_status()
        except Exception as e:  # a supervisor bug must not end the training: log, count, go on
            self.internal_errors += 1
            log.exception("supervisor error (%d so far); the run goes on", self.internal_errors)
            try:
                self.recorder.note(f"supervisor internal error: {type(e).__name__}: {e}", event="internal_error",
                                   message_kind=msg.kind if msg else None)
            except Exception:
                pass

    def _start(self) -> None:
        if self._serve_http:
            from rlguard.orchestrator.control_api import (  # starlette: only when served
                ControlServer,
                build_app,
            )

            app = build_app(self, self.token, self._extra_routes, allow_remote=self.sc.allow_remote)
            self._http = ControlServer(app, self.sc.host, self.sc.port)
            self._http.start()
            self.url, self.port = self._http.url, self._http.port
            self.launcher.env = {"RLGUARD_CONTROL": self.url, "RLGUARD_TOKEN": self.token,
                                 "RLGUARD_RUN_DIR": str(self.files.run_dir),
                                 "RLGUARD_HEARTBEAT_S": str(self.sc.heartbeat_interval_s),
                                 "RLGUARD_SYNC_WAIT_S": str(self.sc.sync_wait_s),
                                 "RLGUARD_SYNC_WAIT_FRACTION": str(self.sc.sync_wait_step_fraction)}
        bind = getattr(self.launcher, "bind", None)
        if bind is not None:  # a trainer launcher's log feeder posts what it reads into the inbox
            bind(self.post, self.sc.heartbeat_interval_s)
        self.files.write_supervisor_info(self.url, self.port, worker=None)
        if self._use_scheduler:
            self._jobs = periodic.PeriodicJobs(
                self.post, run_dir=self.files.run_dir,
                liveness_every_s=max(0.2, min(1.0, self.sc.heartbeat_timeout_s / 4)),
                checkpoint_every_s=self.sc.checkpoint_every_s, eval_every_s=self.sc.eval_every_s,
                misfire_grace_s=self.sc.scheduler_misfire_grace_s)
            self._jobs.start()
        pid = os.getpid()
        self.recorder.note(f"supervisor started (pid {pid}){' to resume the run' if self.resuming else ''}",
                           event="supervisor_started", pid=pid, url=self.url, resume=self.resuming)
        for problem in self.registry.problems:
            self.recorder.note(problem, event="registry_repair")
        describe = getattr(self.launcher, "describe", None)
        if describe is not None:
            self.recorder.note(f"launcher {self.sc.launcher}: {describe()}", event="launcher",
                               launcher=self.sc.launcher)
        if self.resuming:
            recovery.recover(self, self.observe)
        else:
            self.live.initial_constraints = self.initial_constraints()
            self.live.constraints = self.starting_constraints()
            restarts.launch(self, resume=None, reason="start")

    def _shutdown(self) -> None:
        if self._jobs is not None:
            self._jobs.shutdown()
        w = self.live.worker
        if w is not None and self.live.state in (RunState.HALTED, RunState.FAILED, RunState.COMPLETED):
            if not w.poll()[0]:
                w.stop(self.sc.stop_grace_s, clock=self.clock, sleep=self.sleep)
        stop_reading = getattr(w, "stop_reading", None)
        if stop_reading is not None:  # a trainer launcher's log feeder: the next supervisor reads on
            stop_reading()
        try:
            self.recorder.note(f"supervisor stopped: {self.live.state.value}", event="supervisor_stopped",
                               state=self.live.state.value, reason=self.live.reason)
            self.journal.close()
        except Exception:
            log.exception("could not journal the supervisor's stop")
        self.sinks.close()
        if self._http is not None:
            self._http.stop()

    def detach(self, reason: str) -> None:
        """Stop supervising and leave the worker training (SIGTERM/SIGINT to the supervisor)."""
        self.post("detach", {"reason": reason})

    def result(self) -> RunResult:
        counters = {"sink_errors": self.sinks.error_total, "internal_errors": self.internal_errors,
                    "bookkeeping_errors": self.journal.errors + self.registry.errors}
        if self._jobs is not None:
            counters.update({f"job.{k}": v for k, v in self._jobs.counters.items()})
        return RunResult(state=self.live.state, exit_code=ExitCode.for_state(self.live.state),
                         reason=self.live.reason, last_step=self.live.step, restarts_left=self.live.restarts_left,
                         attempts=self.live.attempts_started, rollbacks=self.live.rollbacks, counters=counters)

    # ================================================================ the thread-safe surface

    def post(self, kind: str, payload: dict | None = None) -> Message:
        msg = Message(kind, payload or {})
        self.inbox.put(msg)
        return msg

    def worker_sync(self, body: dict) -> dict:
        """HTTP thread: queue the worker's batch; wait (bounded) until handled; return commands."""
        msg = self.post("sync", body)
        wait_s = min(float(body.get("wait_s") or 0.0), 60.0)
        msg.done.wait(max(0.0, wait_s))
        # `handled` tells the worker whether the commands decided from its events are in this reply.
        return {"commands": self.take_outbox(int(body.get("attempt") or 0)), "handled": msg.done.is_set()}

    async def worker_sync_async(self, body: dict) -> dict:
        """worker_sync for the HTTP event loop: awaits the loop thread without a thread hop."""
        loop = asyncio.get_running_loop()
        handled = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: handled.done() or handled.set_result(None))

        msg = Message("sync", body, on_done=wake)
        self.inbox.put(msg)
        wait_s = min(float(body.get("wait_s") or 0.0), 60.0)
        if wait_s > 0 and not msg.done.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(handled), wait_s)
            except TimeoutError:
                pass  # the reply says so (handled: false): the worker asks again within its wait budget
        return {"commands": self.take_outbox(int(body.get("attempt") or 0)), "handled": msg.done.is_set()}

    def worker_heartbeat(self, body: dict) -> None:
        self.live.note_heartbeat(self.clock(), body.get("progress_age_s"), bool(body.get("paused")))

    def operator(self, action: str, body: dict) -> tuple[int, dict]:
        msg = self.post("operator", {"action": action, "body": body})
        if not msg.done.wait(30.0):
            return 503, {"error": "the supervisor loop did not answer within 30 s; try again"}
        if msg.reply is None:
            return 500, {"error": f"{action} failed inside the supervisor (see its log and the journal)"}
        return msg.reply  # type: ignore[return-value]

    def status(self) -> dict:
        with self._status_lock:
            return dict(self._status)

    # ================================================================ observe

    def handle(self, msg: Message) -> None:
        try:
            if msg.kind == "sync":
                self._on_sync(msg.payload)
            elif msg.kind == "operator":
                msg.reply = handle_operator(self, msg.payload["action"], msg.payload["body"])
            elif msg.kind == periodic.LIVENESS:
                liveness.check_liveness(self)
            elif msg.kind == periodic.WANT_CHECKPOINT:
                self.send(Command(CommandKind.SAVE, {"reason": "checkpoint_every_s"}))
            elif msg.kind == periodic.WANT_EVAL:
                self.send(Command(CommandKind.EVALUATE, {"reason": "eval_every_s"}))
            elif msg.kind == periodic.DISK:
                self._on_disk(msg.payload["free_gb"], msg.payload.get("path", str(self.files.run_dir)))
            elif msg.kind == "detach":
                self.set_state(RunState.DETACHED, msg.payload.get("reason", "detached"))
        finally:
            if msg.kind == "operator":
                # Read-your-writes: an operator who gets the reply and then asks /api/status sees the change.
                try:
                    self._publish_status()
                except Exception:
                    log.exception("could not publish the status after an operator request")
            msg.done.set()
            if msg.on_done is not None:
                msg.on_done()

    def _on_sync(self, body: dict) -> None:
        attempt = int(body.get("attempt") or 0)
        if attempt < self.live.launch_attempt:
            return  # a stale process of an earlier attempt: its reply tells it to stop
        for d in body.get("acks") or []:
            self._on_ack(Ack.from_dict(d))
        for d in body.get("checkpoints") or []:
            self._on_checkpoint(int(d["step"]), str(d["path"]))
        self.live.note_heartbeat(self.clock(), 0.0 if body.get("events") else None, bool(body.get("paused")))
        if self.live.state is RunState.STARTING:
            self.set_state(RunState.RUNNING, f"worker attempt {self.live.launch_attempt} is up")
            self.release_rollback_target(None)  # it has loaded its checkpoint: retention may have it
        for raw in body.get("events") or []:
            try:
                event = event_from_dict(raw)
            except BadEvent as e:
                self.recorder.note(f"bad event from the worker ignored: {e.reason}", event="bad_event")
                continue
            self.observe(event)
        status = body.get("status")
        if status in ("completed", "failed"):
            self.live.worker_final_status = status

    def observe(self, event: MetricEvent) -> None:
        """One metric event: observe -> detect -> decide -> act, each step recorded."""
        live = self.live
        attempt = event.attempt if event.attempt is not None else live.attempt
        if attempt < live.attempt or event.step <= live.last_seen.get(attempt, -1):
            return  # from an abandoned timeline, or a resend after a lost reply
        live.last_seen[attempt] = event.step
        live.attempt = max(live.attempt, attempt)
        live.step = event.step
        # While a timeline is being abandoned (rolling back, restarting) the worker still reports
        # the values it trains with, not the ones decided for what comes next: keep the decided ones.
        self.adopt_constraints(event.metrics,
                               in_force=live.state not in (RunState.ROLLING_BACK, RunState.RESTARTING))
        self.sinks.on_event(event)
        self._note_checkpoint_failures(event)
        self.coverage.observe(event.step, event.metrics)
        alerts = self.monitors.update(event)  # detect
        self.recorder.alerts(alerts)
        self.apply_registry_change(self.registry.observe(event.step, alerts))
        if live.state not in (RunState.RUNNING, RunState.PAUSED) or live.halting:
            return
        for decision in self.engine.decide(event.step, alerts, self.view()):  # decide
            carry_out(self, decision, alerts=alerts)  # act (and record)

    def _note_checkpoint_failures(self, event: MetricEvent) -> None:
        """Journal checkpoints the worker could not write: each one is a rollback target missing.

        `checkpoint_failures` counts per worker process (a relaunch starts again at 0), so the
        count is kept per launch attempt; an in-process rollback keeps counting on."""
        value = event.metrics.get("checkpoint_failures")
        if value is None or not math.isfinite(value) or value <= 0:  # +inf would not convert to a count
            return
        launch = self.live.launch_attempt
        before = self.live.checkpoint_failures.get(launch, 0)
        if int(value) <= before:
            return
        self.live.checkpoint_failures[launch] = int(value)
        total = sum(self.live.checkpoint_failures.values())
        self.recorder.note(f"the worker could not write {int(value) - before} checkpoint(s) (reported at step "
                           f"{event.step}; {total} in this run): rollback can only go to the checkpoints it "
                           "announced; see the worker log (disk full?)", event="checkpoint_write_failed",
                           step=event.step, failures=total)

    def _on_checkpoint(self, step: int, path: str) -> None:
        try:
            change = self.registry.add(step, path)
        except RegistryError as e:
            self.recorder.note(f"checkpoint notice ignored: {e}", event="bad_checkpoint", step=step, path=path)
            return
        entry = self.registry.get(step)
        self.recorder.checkpoint(step, path, entry.health.value if entry else "pruned",
                                 note=entry.note if entry else "")
        self.apply_registry_change(change, skip_step=step)

    def _on_ack(self, ack: Ack) -> None:
        with self.live.lock:
            sent = self.live.unacked.pop(ack.command_id, None)
        if sent is None:
            recovery.on_orphan_ack(self, ack)  # a command a previous supervisor sent
        else:
            on_command_outcome(self, sent, ack)

    def _on_disk(self, free_gb: float, path: str) -> None:
        if free_gb < self.sc.disk_min_free_gb:
            self.recorder.note(f"disk nearly full at {path}: {free_gb:.3f} GB free < disk_min_free_gb="
                               f"{self.sc.disk_min_free_gb:g}", event="disk_low", free_gb=round(free_gb, 4),
                               path=path)

    def _check_worker_exit(self) -> None:
        ended = liveness.exited_worker(self)
        if ended is None:
            return
        w, rc = ended
        while True:  # the worker's last words (final sync) may still be queued
            try:
                self.handle(self.inbox.get_nowait())
            except queue.Empty:
                break
        if self.live.worker is not w:
            return
        self.live.worker = None
        self.exited_worker = w
        liveness.on_worker_exit(self, w, rc)

    def _publish_status(self) -> None:
        snap = build_status(self)
        with self._status_lock:
            self._status = snap


__all__ = ["Supervisor", "Message", "PendingApproval", "WorkerProcess", "describe_exit", "make_launcher"]
