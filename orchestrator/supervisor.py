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
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from monitors.events import BadEvent, MetricEvent, event_from_dict
from orchestrator import liveness, periodic, restarts
from orchestrator.commands import CONSTRAINT_NAMES, Ack, Command, CommandKind
from orchestrator.coverage_log import CoverageLog
from orchestrator.durable import SafeJournal, SafeRegistry
from orchestrator.launcher import Launcher, WorkerProcess, describe_exit
from orchestrator.live import LiveRun, PendingApproval, SentCommand
from orchestrator.registry import RegistryError
from orchestrator.run_files import RunFiles, read_supervisor_info
from orchestrator.sinks import SinkFanout
from orchestrator.spec import RunConfig
from orchestrator.state import ExitCode, RunResult, RunState
from policies.decision import Action, Decision

log = logging.getLogger("rlguard.supervisor")


@dataclass
class Message:
    """One thing for the loop to handle; `reply` is set by the loop when the sender waits."""

    kind: str
    payload: dict = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    reply: object = None
    on_done: Callable[[], None] | None = None  # called on the loop thread once handled


class Supervisor:
    """Runs one supervised training run in `run_dir` (see orchestrator/run_cli.py for the CLI)."""

    def __init__(self, run_dir: str | Path, config: RunConfig, *, sinks: list | None = None,
                 extra_routes: list | None = None, monitors=None, engine=None, resume: bool = False,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, serve_http: bool = True, scheduler: bool = True):
        from orchestrator.components import build_engine, build_monitors  # imported late: optional packages

        self.cfg = config
        self.sc = config.supervisor
        self.files = RunFiles(Path(run_dir))
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.monitors = monitors if monitors is not None else build_monitors(config.monitors)
        self.engine = engine if engine is not None else build_engine(config.policies)
        self.sinks = SinkFanout(sinks)
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.live = LiveRun(restarts_left=self.sc.max_restarts)
        self.token = self.files.ensure_token()
        if not self.files.config_path.exists():  # embedded use: `rlguard run` wrote it already
            self.files.write_config(config.model_dump(mode="json"))
        self.journal = SafeJournal(self.files.open_journal())
        self.registry = SafeRegistry(self.files.open_registry(config))
        self.coverage = CoverageLog(self.journal, log)  # which failure classes the logged metrics arm
        self.launcher = _make_launcher(self.files.run_dir, self.files.config_path, self.sc)
        self._resume = resume
        self.previous_info = read_supervisor_info(self.files.run_dir) if resume else {}
        self._extra_routes = list(extra_routes or [])
        self._serve_http = serve_http
        self._use_scheduler = scheduler
        self._http = None
        self._jobs: periodic.PeriodicJobs | None = None
        self._exited_worker: WorkerProcess | None = None  # for the log tail of a crash
        self._status: dict = {"state": RunState.INIT.value}
        self._status_lock = threading.Lock()
        self.approval_cfg = getattr(getattr(self.engine, "cfg", None), "approval", None)
        self.internal_errors = 0
        # decisions a previous supervisor sent and never heard back about: decision_id -> (decision, deadline)
        self.orphan_decisions: dict[str, tuple[Decision, float]] = {}
        self.operator_decisions: set[str] = set()  # decision ids the policy engine did not make

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
        """One turn of the loop: handle one message (or time out), then liveness and timers."""
        try:
            msg = self.inbox.get(timeout=self.sc.tick_s if timeout is None else timeout)
        except queue.Empty:
            msg = None
        try:
            if msg is not None:
                self.handle(msg)
            liveness.check_worker_exit(self)
            self.check_timers()
            self._publish_status()
        except Exception as e:  # a supervisor bug must not end the training: log, count, go on
            self.internal_errors += 1
            log.exception("supervisor error (%d so far); the run goes on", self.internal_errors)
            try:
                self.journal.note(f"supervisor internal error: {type(e).__name__}: {e}", event="internal_error",
                                  message_kind=msg.kind if msg else None)
            except Exception:
                pass

    def _start(self) -> None:
        from orchestrator.control_api import ControlServer, build_app
        from orchestrator.recovery import recover

        if self._serve_http:
            app = build_app(self, self.token, self._extra_routes, allow_remote=self.sc.allow_remote)
            self._http = ControlServer(app, self.sc.host, self.sc.port)
            self._http.start()
            self.launcher.env = {"RLGUARD_CONTROL": self._http.url, "RLGUARD_TOKEN": self.token,
                                 "RLGUARD_RUN_DIR": str(self.files.run_dir),
                                 "RLGUARD_HEARTBEAT_S": str(self.sc.heartbeat_interval_s),
                                 "RLGUARD_SYNC_WAIT_S": str(self.sc.sync_wait_s),
                                 "RLGUARD_SYNC_WAIT_FRACTION": str(self.sc.sync_wait_step_fraction)}
        bind = getattr(self.launcher, "bind", None)
        if bind is not None:  # a trainer launcher's log feeder posts what it reads into the inbox
            bind(self.post, self.sc.heartbeat_interval_s)
        self.files.write_supervisor_info(self.url, self.port,
                                         worker=None)
        if self._use_scheduler:
            self._jobs = periodic.PeriodicJobs(
                self.post, run_dir=self.files.run_dir,
                liveness_every_s=max(0.2, min(1.0, self.sc.heartbeat_timeout_s / 4)),
                checkpoint_every_s=self.sc.checkpoint_every_s, eval_every_s=self.sc.eval_every_s,
                misfire_grace_s=self.sc.scheduler_misfire_grace_s)
            self._jobs.start()
        self.journal.note(f"supervisor started (pid {_pid()}){' to resume the run' if self._resume else ''}",
                          event="supervisor_started", pid=_pid(), url=self.url,
                          resume=self._resume)
        for problem in self.registry.problems:
            self.journal.note(problem, event="registry_repair")
        describe = getattr(self.launcher, "describe", None)
        if describe is not None:
            self.journal.note(f"launcher {self.sc.launcher}: {describe()}", event="launcher", launcher=self.sc.launcher)
        if self._resume:
            recover(self)
        else:
            self.live.initial_constraints = self._initial_constraints()
            self.live.constraints = self._starting_constraints()
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
            self.journal.note(f"supervisor stopped: {self.live.state.value}", event="supervisor_stopped",
                              state=self.live.state.value, reason=self.live.reason)
            self.journal.close()
        except Exception:
            log.exception("could not journal the supervisor's stop")
        self.sinks.close()
        if self._http is not None:
            self._http.stop()

    @property
    def url(self) -> str:
        return self._http.url if self._http else ""

    @property
    def port(self) -> int:
        return self._http.port if self._http else 0

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
        return {"commands": self._take_outbox(int(body.get("attempt") or 0)), "handled": msg.done.is_set()}

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
        return {"commands": self._take_outbox(int(body.get("attempt") or 0)), "handled": msg.done.is_set()}

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

    def _take_outbox(self, attempt: int) -> list[dict]:
        with self.live.lock:
            if attempt < self.live.launch_attempt:
                return [Command(CommandKind.STOP, {"reason": "stale worker from an earlier attempt"}).to_dict()]
            cmds, self.live.outbox = self.live.outbox, []
            now = self.clock()
            for c in cmds:
                sent = self.live.unacked.get(c.id)
                if sent is not None:
                    sent.sent_at = now  # the ack timeout runs from delivery
        return [c.to_dict() for c in cmds]

    def send(self, command: Command, decision: Decision | None = None) -> None:
        """Queue a command for the worker's next sync (its next step boundary)."""
        if not getattr(self.launcher, "accepts_commands", True):
            # verl / OpenRLHF read no commands: one never acknowledged would read as a suspect worker.
            self.journal.note(f"command {command.kind.value} not sent: the {self.sc.launcher} launcher takes no "
                              "commands while the trainer runs", event="command_not_sent", command=command.to_dict())
            if decision is not None:
                self.outcome(decision, command.decision_id, "skipped",
                             f"{self.sc.launcher} takes no {command.kind.value} command while it runs")
            return
        with self.live.lock:
            self.live.outbox.append(command)
            self.live.unacked[command.id] = SentCommand(command, float("inf"), decision)

    # ================================================================ observe

    def handle(self, msg: Message) -> None:
        try:
            if msg.kind == "sync":
                self._on_sync(msg.payload)
            elif msg.kind == "operator":
                from orchestrator.operator import handle_operator

                msg.reply = handle_operator(self, msg.payload["action"], msg.payload["body"])
            elif msg.kind == periodic.LIVENESS:
                self.check_liveness()
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
        now = self.clock()
        self.live.note_heartbeat(now, 0.0 if body.get("events") else None, bool(body.get("paused")))
        if self.live.state is RunState.STARTING:
            self.set_state(RunState.RUNNING, f"worker attempt {self.live.launch_attempt} is up")
            from orchestrator.acting import release_relaunch_target

            release_relaunch_target(self)  # it has loaded its checkpoint: retention may have it
        for raw in body.get("events") or []:
            try:
                event = event_from_dict(raw)
            except BadEvent as e:
                self.journal.note(f"bad event from the worker ignored: {e.reason}", event="bad_event")
                continue
            self._observe(event)
        status = body.get("status")
        if status in ("completed", "failed"):
            self.live.worker_final_status = status

    def _observe(self, event: MetricEvent) -> None:
        attempt = event.attempt if event.attempt is not None else self.live.attempt
        if attempt < self.live.attempt or event.step <= self.live.last_seen.get(attempt, -1):
            return  # from an abandoned timeline, or a resend after a lost reply
        self.live.last_seen[attempt] = event.step
        self.live.attempt = max(self.live.attempt, attempt)
        self.live.step = event.step
        # While a timeline is being abandoned (rolling back, restarting) the worker still reports
        # the values it trains with, not the ones decided for what comes next: keep the decided ones.
        adopt = self.live.state not in (RunState.ROLLING_BACK, RunState.RESTARTING)
        # A trainer launcher put the knobs on the command line itself: what the trainer logs (an
        # adaptive KL controller's beta, a scheduled lr) is not what a relaunch should pass.
        for name in () if getattr(self.launcher, "knobs_from_command_line", False) else CONSTRAINT_NAMES:
            v = event.metrics.get(name)
            if v is not None:
                if adopt:
                    self.live.constraints[name] = v
                # A custom worker's starting values are known from its first events.
                self.live.initial_constraints.setdefault(name, v)
        self.sinks.on_event(event)
        self.coverage.observe(event.step, event.metrics)
        alerts = self.monitors.update(event)  # detect
        for a in alerts:
            self.journal.alert(a)
            self.sinks.on_alert(a)
        self.live.note_alerts(alerts)
        self.apply_registry_change(self.registry.observe(event.step, alerts))
        if self.live.state not in (RunState.RUNNING, RunState.PAUSED) or self.live.halting:
            return
        for decision in self.engine.decide(event.step, alerts, self._view()):  # decide
            self.carry_out(decision, alerts)

    def _on_checkpoint(self, step: int, path: str) -> None:
        try:
            change = self.registry.add(step, path)
        except RegistryError as e:
            self.journal.note(f"checkpoint notice ignored: {e}", event="bad_checkpoint", step=step, path=path)
            return
        entry = self.registry.get(step)
        health = entry.health.value if entry else "pruned"
        self.journal.checkpoint(step, path, health, note=entry.note if entry else "")
        self.sinks.on_checkpoint(step, path, health)
        self.apply_registry_change(change, skip_step=step)

    def _on_ack(self, ack: Ack) -> None:
        with self.live.lock:
            sent = self.live.unacked.pop(ack.command_id, None)
        if sent is None:
            from orchestrator.recovery import on_orphan_ack

            on_orphan_ack(self, ack)
            return
        from orchestrator.acting import on_command_outcome

        on_command_outcome(self, sent, ack)

    def _on_disk(self, free_gb: float, path: str) -> None:
        if free_gb < self.sc.disk_min_free_gb:
            self.journal.note(f"disk nearly full at {path}: {free_gb:.3f} GB free < disk_min_free_gb="
                              f"{self.sc.disk_min_free_gb:g}", event="disk_low", free_gb=round(free_gb, 4), path=path)

    # ================================================================ act (see orchestrator/acting.py)

    def carry_out(self, decision: Decision, alerts=()) -> str:
        from orchestrator.acting import carry_out

        return carry_out(self, decision, alerts=alerts)

    def apply_registry_change(self, change, skip_step: int | None = None) -> None:
        """Journal and publish checkpoint health changes and prunes."""
        for step, _old, new in change.health:
            if step == skip_step:
                continue
            entry = self.registry.get(step)
            path = str(self.registry.path_of(entry)) if entry else ""
            self.journal.checkpoint(step, path, new.value, note=entry.note if entry else "")
            self.sinks.on_checkpoint(step, path, new.value)
        for step in change.pruned:
            self.journal.checkpoint(step, "", "pruned")
            self.sinks.on_checkpoint(step, "", "pruned")
            on_pruned = getattr(self.launcher, "on_pruned", None)
            note = on_pruned(step) if on_pruned is not None else ""
            if note:
                self.journal.note(note, event="trainer_checkpoint_pruned", step=step)

    def report_corruptions(self) -> None:
        for a in self.registry.take_corruption_alerts():
            self.journal.alert(a)
            self.journal.checkpoint(a.step, "", "corrupt", note=a.message)
            self.sinks.on_alert(a)
            self.sinks.on_checkpoint(a.step, "", "corrupt")
            self.live.note_alerts([a])

    # ================================================================ liveness, timers, restarts

    def check_liveness(self) -> None:
        """Restart a worker that is silent, hung or ignoring commands (orchestrator/liveness.py)."""
        liveness.check_liveness(self)

    def check_timers(self) -> None:
        """Relaunch, approval, orphan-decision and halt deadlines (orchestrator/liveness.py)."""
        liveness.check_timers(self)

    def restart(self, reason: str, *, resume: str | None = None, decision: tuple[Decision, str] | None = None,
                skip_batches: int = 0) -> None:
        """Kill the worker group and schedule a relaunch (orchestrator/restarts.py)."""
        restarts.restart(self, reason, resume=resume, decision=decision, skip_batches=skip_batches)

    # ================================================================ helpers

    def _constraint_overrides(self) -> dict:
        """Constraint values that differ from the trainer config's: passed to a (re)launched worker."""
        init = self.live.initial_constraints
        return {k: v for k, v in self.live.constraints.items() if init.get(k) != v}

    def _initial_constraints(self) -> dict:
        """The constraint values the run starts from, which relax returns to.

        Declared in the trainer section, else (built-in worker) the trainer's defaults. A
        `command:` worker's undeclared ones come from its first events (see _observe): the
        built-in trainer's defaults say nothing about another trainer's knobs."""
        initial = getattr(self.launcher, "initial_constraints", None)
        if initial is not None:  # a trainer launcher knows them from the user's flags and the trainer's defaults
            return initial()
        t = self.cfg.trainer
        out = {k: float(t[k]) for k in CONSTRAINT_NAMES
               if isinstance(t.get(k), (int, float)) and not isinstance(t.get(k), bool)}
        if len(out) < len(CONSTRAINT_NAMES) and self.sc.command is None:
            try:  # the built-in worker: fill from the trainer's defaults
                from ppo.config import TrainConfig

                defaults = TrainConfig()
                for k in CONSTRAINT_NAMES:
                    out.setdefault(k, float(getattr(defaults, k)))
            except Exception:
                pass
        return out

    def _starting_constraints(self) -> dict:
        """The constraints in force before the first event. A `command:` worker starts with none:
        policies may only change the knobs it reports (kl_coef / clip_range / lr metrics), so one
        without a clip range is never sent a clip_range."""
        known = self.sc.command is None or hasattr(self.launcher, "initial_constraints")
        return dict(self.live.initial_constraints) if known else {}

    def _view(self):
        from policies.view import RunView

        # Open warning incidents let the engine escalate a warning that persists without
        # being raised again (policies/engine.py); a custom monitor stack may not track them.
        open_incidents = getattr(self.monitors, "open_incidents", None)
        open_warnings = dict(open_incidents()) if open_incidents is not None else {}
        return RunView(step=self.live.step or 0, constraints=dict(self.live.constraints),
                       initial_constraints=dict(self.live.initial_constraints), checkpoints=self.registry.views(),
                       open_warnings=open_warnings)

    def _fail_unacked(self, why: str) -> None:
        from orchestrator.acting import on_command_outcome

        pending = list(self.live.unacked.values()) + [SentCommand(c, 0.0) for c in self.live.outbox
                                                      if c.id not in self.live.unacked]
        self.live.unacked.clear()
        with self.live.lock:
            self.live.outbox = []
        for sent in pending:
            if sent.decision is not None and sent.command.kind is not CommandKind.LOAD:
                on_command_outcome(self, sent, Ack(sent.command.id, False, why))

    def outcome(self, decision: Decision, decision_id: str, phase: str, outcome: str) -> None:
        self.journal.finished(decision_id, phase, outcome)
        self.sinks.on_decision(decision, phase, outcome, decision_id=decision_id, reason=decision.reason)
        if decision.action is not Action.NOTIFY and decision_id not in self.operator_decisions:
            self.engine.note_outcome(decision, phase)

    def set_state(self, state: RunState, reason: str) -> None:
        if state is self.live.state and reason == self.live.reason:
            return
        previous = self.live.state
        self.live.state, self.live.reason = state, reason
        self.journal.state(state.value, previous=previous.value, reason=reason, step=self.live.step)
        self.sinks.on_state(state.value)
        log.info("state %s -> %s: %s", previous.value, state.value, reason)

    def _publish_status(self) -> None:
        from orchestrator.operator import build_status

        snap = build_status(self)
        with self._status_lock:
            self._status = snap


def _make_launcher(run_dir: Path, config_path: Path, sc) -> Launcher:
    """The built-in/command launcher, or a trainer launcher (orchestrator/trainer_launch.py)."""
    if sc.launcher == "verl":
        from orchestrator.verl_launch import VerlLauncher

        return VerlLauncher(run_dir, config_path, sc.verl, env={})
    if sc.launcher == "openrlhf":
        from orchestrator.openrlhf_launch import OpenRLHFLauncher

        return OpenRLHFLauncher(run_dir, config_path, sc.openrlhf, env={})
    return Launcher(run_dir, config_path, sc.command_argv(), env={})


def _pid() -> int:
    import os

    return os.getpid()


__all__ = ["Supervisor", "Message", "PendingApproval", "WorkerProcess", "describe_exit"]
