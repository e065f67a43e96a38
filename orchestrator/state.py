"""Run states, their transitions, exit codes, and the result of a supervised run."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class RunState(StrEnum):
    """The supervisor's view of the run. Every change is journaled and sent to the sinks.

    INIT       -> STARTING       config validated, run directory ready, control API up.
    STARTING   -> RUNNING        the new worker's first heartbeat or event arrived.
    STARTING   -> RESTARTING     the worker died, or sent nothing within startup_timeout_s.
    RUNNING    -> PAUSED         operator pause, or a decision in approve mode awaits an answer.
    PAUSED     -> RUNNING        resume, approval, denial, or the approval timed out.
    RUNNING    -> ROLLING_BACK   in-process rollback command sent; back to RUNNING on its ack.
    ROLLING_BACK -> RESTARTING   the worker could not load the checkpoint, died or timed out.
    RUNNING    -> RESTARTING     crash (non-zero exit, signal, OOM), hang, frozen, restart-rollback.
    RESTARTING -> STARTING       after the backoff, relaunched (budget decremented there, once).
    RESTARTING -> FAILED         restart budget spent, or nothing healthy to restart from.
    RUNNING    -> COMPLETED      the worker exited 0 after its last step.
    any        -> HALTED         a halt decision (policy) or operator halt: worker stopped.
    any        -> DETACHED       the supervisor itself was asked to stop (SIGTERM/SIGINT): the
                                 worker keeps training; `rlguard run --resume RUN` reattaches.
    any        -> UNKNOWN        the supervisor cannot tell what the worker is doing (e.g. after
                                 reattaching, the worker is gone without a status): never guess;
                                 treated like a crash (restart from the last healthy checkpoint).
    """

    INIT = "init"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    RESTARTING = "restarting"
    COMPLETED = "completed"
    HALTED = "halted"
    FAILED = "failed"
    DETACHED = "detached"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in (RunState.COMPLETED, RunState.HALTED, RunState.FAILED, RunState.DETACHED)


class ExitCode(IntEnum):
    """`rlguard run` exit codes (stable: schedulers and CI key on them)."""

    COMPLETED = 0      # the worker finished all its steps
    INTERNAL = 1       # a bug in rlguard itself (the worker is left running)
    USAGE = 2          # bad command line or configuration; nothing was started
    HALTED = 3         # a halt decision (policy) or an operator halt stopped the run
    FAILED = 4         # the restart budget is spent, or no checkpoint to restart from
    DETACHED = 5       # the supervisor was stopped (signal) and left the worker training

    @classmethod
    def for_state(cls, state: RunState) -> ExitCode:
        return {
            RunState.COMPLETED: cls.COMPLETED,
            RunState.HALTED: cls.HALTED,
            RunState.FAILED: cls.FAILED,
            RunState.DETACHED: cls.DETACHED,
        }.get(state, cls.INTERNAL)


@dataclass
class RunResult:
    """What a supervised run ended as (returned by Supervisor.run())."""

    state: RunState
    exit_code: ExitCode
    reason: str
    last_step: int | None
    restarts_left: int
    attempts: int
    rollbacks: int = 0
    counters: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "state": self.state.value,
            "exit_code": int(self.exit_code),
            "reason": self.reason,
            "last_step": self.last_step,
            "restarts_left": self.restarts_left,
            "attempts": self.attempts,
            "rollbacks": self.rollbacks,
            "counters": dict(self.counters),
        }
