"""The live object: what the supervisor knows about the run right now.

Only the monitor loop thread writes it, except the few heartbeat fields the HTTP thread
updates under `lock`. The HTTP thread reads a snapshot (`status`) the loop publishes.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from rlguard.monitors.alerts import Alert
from rlguard.orchestrator.commands import Command
from rlguard.orchestrator.launcher import WorkerProcess
from rlguard.orchestrator.state import RunState
from rlguard.policies.decision import Decision


@dataclass
class SentCommand:
    command: Command
    sent_at: float
    decision: Decision | None = None


@dataclass
class PendingApproval:
    """A decision in approve mode: the worker is paused until an answer or the deadline."""

    decision: Decision
    decision_id: str
    deadline: float


@dataclass
class LiveRun:
    state: RunState = RunState.INIT
    reason: str = ""
    worker: WorkerProcess | None = None
    launch_attempt: int = -1          # attempt number the current process was launched with
    attempt: int = 0                  # attempt of the events we expect (bumped by in-process rollback)
    attempts_started: int = 0
    step: int | None = None           # last step observed in the current attempt
    last_seen: dict[int, int] = field(default_factory=dict)  # attempt -> last step processed
    checkpoint_failures: dict[int, int] = field(default_factory=dict)  # launch attempt -> failed writes
    constraints: dict[str, float] = field(default_factory=dict)
    initial_constraints: dict[str, float] = field(default_factory=dict)
    outbox: list[Command] = field(default_factory=list)       # not yet delivered
    unacked: dict[str, SentCommand] = field(default_factory=dict)
    approval: PendingApproval | None = None
    operator_paused: bool = False
    halting: tuple[Decision | None, str, float] | None = None  # (decision, decision_id, kill deadline)
    relaunch_at: float | None = None
    relaunch_resume: str | None = None
    relaunch_decision: tuple[Decision, str] | None = None       # restart-rollback to report when back
    relaunch_skip: int = 0
    worker_final_status: str | None = None
    restarts_left: int = 0
    rollbacks: int = 0
    recent_alerts: deque = field(default_factory=lambda: deque(maxlen=20))
    # heartbeat fields: written by the HTTP thread under `lock`
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_heartbeat: float | None = None
    last_progress: float | None = None
    heartbeat_paused: bool = False

    def note_heartbeat(self, now: float, progress_age_s: float | None, paused: bool) -> None:
        with self.lock:
            self.last_heartbeat = now
            if progress_age_s is not None:
                self.last_progress = now - max(0.0, float(progress_age_s))
            self.heartbeat_paused = paused

    def note_alerts(self, alerts: list[Alert]) -> None:
        self.recent_alerts.extend(a.to_dict() for a in alerts)

    @property
    def paused(self) -> bool:
        return self.operator_paused or self.approval is not None


def format_values(values: dict) -> str:
    """`a=1, b=0.5` for journal and decision texts (floats in %g), `-` when empty."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items())) or "-"
