"""The run context: what one supervised run shares, and the small operations on it.

The supervisor's parts are layered; each imports only the ones below it:

    supervisor   the loop: observe -> detect -> decide -> act -> record
    operator     operator requests (pause, rollback, ...) and the status snapshot
    liveness     silent, hung or exited workers; deadlines
    recovery     `--resume`: rebuild this context from the journal, reattach
    acting       the one applier of a decision, whoever made it
    restarts     kill, back off, relaunch (the one place the restart budget is spent)
    run_context  this module: state, components, recording, command queue, constraints

Everything here runs on the loop thread, except `take_outbox` (the HTTP thread, under the
live lock) and the heartbeat fields LiveRun guards itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from rlguard.orchestrator.commands import Command, CommandKind
from rlguard.orchestrator.components import build_engine, build_monitors
from rlguard.orchestrator.coverage_log import CoverageLog
from rlguard.orchestrator.durable import SafeJournal, SafeRegistry
from rlguard.orchestrator.launcher import Launcher, WorkerProcess
from rlguard.orchestrator.live import LiveRun, SentCommand
from rlguard.orchestrator.openrlhf_launch import OpenRLHFLauncher
from rlguard.orchestrator.recorder import Recorder
from rlguard.orchestrator.registry import RegistryChange
from rlguard.orchestrator.run_files import RunFiles, read_supervisor_info
from rlguard.orchestrator.sinks import SinkFanout
from rlguard.orchestrator.spec import RunConfig
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.verl_launch import VerlLauncher
from rlguard.policies.decision import CONSTRAINT_NAMES, Action, Decision, Phase
from rlguard.policies.view import RunView

log = logging.getLogger("rlguard.supervisor")


class RunContext:
    """The shared state of one supervised run (see the module docstring for who uses it)."""

    def __init__(self, run_dir: str | Path, config: RunConfig, *, sinks: list | None = None, monitors=None,
                 engine=None, resume: bool = False, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.cfg = config
        self.sc = config.supervisor
        self.files = RunFiles(Path(run_dir))
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.monitors = monitors if monitors is not None else build_monitors(config.monitors)
        self.engine = engine if engine is not None else build_engine(config.policies)
        self.sinks = SinkFanout(sinks)
        self.live = LiveRun(restarts_left=self.sc.max_restarts)
        self.token = self.files.ensure_token()
        if not self.files.config_path.exists():  # embedded use: `rlguard run` wrote it already
            self.files.write_config(config.model_dump(mode="json"))
        self.journal = SafeJournal(self.files.open_journal())
        self.registry = SafeRegistry(self.files.open_registry(config))
        self.recorder = Recorder(self.journal, self.sinks, on_alerts=self.live.note_alerts)
        self.coverage = CoverageLog(self.journal, log)  # which failure classes the logged metrics arm
        self.launcher = make_launcher(self.files.run_dir, self.files.config_path, self.sc)
        self.resuming = resume
        self.previous_info = read_supervisor_info(self.files.run_dir) if resume else {}
        self.approval_cfg = getattr(getattr(self.engine, "cfg", None), "approval", None)
        self.exited_worker: WorkerProcess | None = None  # for the log tail of a crash
        # decisions a previous supervisor sent and never heard back about: decision_id -> (decision, deadline)
        self.orphan_decisions: dict[str, tuple[Decision, float]] = {}
        self.operator_decisions: set[str] = set()  # decision ids the policy engine did not make
        self.url, self.port = "", 0  # the control API's, once it is up

    # ---------------------------------------------------------------- what the launcher allows

    @property
    def accepts_commands(self) -> bool:
        """verl / OpenRLHF read no commands while they run: knobs change only at a relaunch."""
        return getattr(self.launcher, "accepts_commands", True)

    @property
    def knobs_from_command_line(self) -> bool:
        """A trainer launcher puts the knobs on the command line itself: what the trainer logs
        (an adaptive KL controller's beta, a scheduled lr) is not what a relaunch should pass."""
        return getattr(self.launcher, "knobs_from_command_line", False)

    # ---------------------------------------------------------------- recording

    def set_state(self, state: RunState, reason: str) -> None:
        if state is self.live.state and reason == self.live.reason:
            return
        previous = self.live.state
        self.live.state, self.live.reason = state, reason
        self.recorder.state(state.value, previous=previous.value, reason=reason, step=self.live.step)
        log.info("state %s -> %s: %s", previous.value, state.value, reason)

    def outcome(self, decision: Decision, decision_id: str, phase: Phase | str, outcome: str) -> None:
        """Record how a decision ended; the policy engine learns it when it made the decision."""
        self.recorder.outcome(decision, decision_id, phase, outcome)
        if decision.action is not Action.NOTIFY and decision_id not in self.operator_decisions:
            self.engine.note_outcome(decision, Phase(phase).value)

    def apply_registry_change(self, change, skip_step: int | None = None) -> None:
        """Record checkpoint health changes and prunes."""
        for step, _old, new in change.health:
            if step == skip_step:
                continue
            entry = self.registry.get(step)
            path = str(self.registry.path_of(entry)) if entry else ""
            self.recorder.checkpoint(step, path, new.value, note=entry.note if entry else "")
        for step in change.pruned:
            self.recorder.checkpoint(step, "", "pruned")
            on_pruned = getattr(self.launcher, "on_pruned", None)
            note = on_pruned(step) if on_pruned is not None else ""
            if note:
                self.recorder.note(note, event="trainer_checkpoint_pruned", step=step)

    def report_corruptions(self) -> None:
        for a in self.registry.take_corruption_alerts():
            self.recorder.alerts([a])
            self.recorder.checkpoint(a.step, "", "corrupt", note=a.message)

    def release_rollback_target(self, step: int | None) -> None:
        """A held rollback target is no longer needed (None: whatever was held for a relaunch):
        retention may now prune it (recorded)."""
        pruned = self.registry.release(step)
        if pruned:
            self.apply_registry_change(RegistryChange(pruned=pruned))

    # ---------------------------------------------------------------- commands to the worker

    def send(self, command: Command, decision: Decision | None = None) -> None:
        """Queue a command for the worker's next sync (its next step boundary)."""
        if not self.accepts_commands:
            # One never acknowledged would read as a suspect worker.
            self.recorder.note(f"command {command.kind.value} not sent: the {self.sc.launcher} launcher takes no "
                               "commands while the trainer runs", event="command_not_sent", command=command.to_dict())
            if decision is not None:
                self.outcome(decision, command.decision_id, Phase.SKIPPED,
                             f"{self.sc.launcher} takes no {command.kind.value} command while it runs")
            return
        with self.live.lock:
            self.live.outbox.append(command)
            self.live.unacked[command.id] = SentCommand(command, float("inf"), decision)

    def take_outbox(self, attempt: int) -> list[dict]:
        """HTTP thread: the commands for a worker's sync (a stale attempt is told to stop)."""
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

    # ---------------------------------------------------------------- constraints and the engine's view

    def constraint_overrides(self) -> dict:
        """Constraint values that differ from the trainer config's: passed to a (re)launched worker."""
        init = self.live.initial_constraints
        return {k: v for k, v in self.live.constraints.items() if init.get(k) != v}

    def initial_constraints(self) -> dict:
        """The constraint values the run starts from, which relax returns to.

        Declared in the trainer section, else (built-in worker) the trainer's defaults. A
        `command:` worker's undeclared ones come from its first events (see adopt_constraints):
        the built-in trainer's defaults say nothing about another trainer's knobs."""
        initial = getattr(self.launcher, "initial_constraints", None)
        if initial is not None:  # a trainer launcher knows them from the user's flags and the trainer's defaults
            return initial()
        t = self.cfg.trainer
        out = {k: float(t[k]) for k in CONSTRAINT_NAMES
               if isinstance(t.get(k), (int, float)) and not isinstance(t.get(k), bool)}
        if len(out) < len(CONSTRAINT_NAMES) and self.sc.command is None:
            try:  # the built-in worker: fill from the trainer's defaults
                from rlguard.ppo.config import TrainConfig

                defaults = TrainConfig()
                for k in CONSTRAINT_NAMES:
                    out.setdefault(k, float(getattr(defaults, k)))
            except Exception:
                pass
        return out

    def starting_constraints(self) -> dict:
        """The constraints in force before the first event. A `command:` worker starts with none:
        policies may only change the knobs it reports (kl_coef / clip_range / lr metrics), so one
        without a clip range is never sent a clip_range."""
        known = self.sc.command is None or hasattr(self.launcher, "initial_constraints")
        return dict(self.live.initial_constraints) if known else {}

    def adopt_constraints(self, metrics: dict, *, in_force: bool) -> None:
        """The knob values a worker reports (unless the launcher set them on the command line).
        in_force=False while a timeline is being abandoned: the values decided for what comes
        next stay; a custom worker's starting values are still learnt from its first events."""
        if self.knobs_from_command_line:
            return
        for name in CONSTRAINT_NAMES:
            v = metrics.get(name)
            if v is not None:
                if in_force:
                    self.live.constraints[name] = v
                self.live.initial_constraints.setdefault(name, v)

    def view(self) -> RunView:
        """What the policy engine sees of the run."""
        # Open warning incidents let the engine escalate a warning that persists without
        # being raised again (policies/engine.py); a custom monitor stack may not track them.
        open_incidents = getattr(self.monitors, "open_incidents", None)
        open_warnings = dict(open_incidents()) if open_incidents is not None else {}
        return RunView(step=self.live.step or 0, constraints=dict(self.live.constraints),
                       initial_constraints=dict(self.live.initial_constraints), checkpoints=self.registry.views(),
                       open_warnings=open_warnings,
                       checkpoint_write_failures=sum(self.live.checkpoint_failures.values()))


def make_launcher(run_dir: Path, config_path: Path, sc) -> Launcher:
    """The built-in/command launcher, or a trainer launcher (orchestrator/trainer_launch.py)."""
    if sc.launcher == "verl":
        return VerlLauncher(run_dir, config_path, sc.verl, env={})
    if sc.launcher == "openrlhf":
        return OpenRLHFLauncher(run_dir, config_path, sc.openrlhf, env={})
    return Launcher(run_dir, config_path, sc.command_argv(), env={})
