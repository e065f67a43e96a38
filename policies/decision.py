"""The decision type every policy returns; one arbiter in the supervisor carries it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from rlguard.monitors.events import CONSTRAINT_NAMES  # the knobs a decision may set (Decision.params)

__all__ = ["CONSTRAINT_NAMES", "Action", "Decision", "Disposition", "Mode", "OUTCOME_PHASES", "Phase", "disposition"]


class Mode(StrEnum):
    """How a decision is carried out: act, only say what would be done, or ask a person first."""

    AUTO = "auto"
    ADVISE = "advise"
    APPROVE = "approve"


class Phase(StrEnum):
    """A decision's journal phases: `decided` before anything happens, then exactly one outcome."""

    DECIDED = "decided"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    DENIED = "denied"


OUTCOME_PHASES = (Phase.DONE, Phase.FAILED, Phase.SKIPPED, Phase.DENIED)


class Action(StrEnum):
    """What the supervisor does, in priority order (highest first) when several compete:
    halt > rollback > tighten > relax > notify."""

    HALT = "halt"
    ROLLBACK = "rollback"
    TIGHTEN = "tighten"
    RELAX = "relax"
    NOTIFY = "notify"

    @property
    def priority(self) -> int:
        return {"halt": 4, "rollback": 3, "tighten": 2, "relax": 1, "notify": 0}[self.value]


@dataclass(frozen=True)
class Decision:
    """One decision taken at one step.

    action: what to do.
    step: the step at which it was decided.
    reason: for people and the journal, with the numbers.
    target_step: for rollback, the checkpoint step to return to (None otherwise).
    params: new constraint values for tighten/relax/rollback, e.g. {"kl_coef": 0.075}.
    skip_batches: for rollback, how many batches after the restored cursor to skip.
    mode: Mode.AUTO (act), ADVISE (only say what would be done), APPROVE (ask a person).
    alerts: codes of the alerts that led to it.
    """

    action: Action
    step: int
    reason: str
    target_step: int | None = None
    params: dict = field(default_factory=dict)
    skip_batches: int = 0
    mode: Mode = Mode.AUTO
    alerts: tuple[str, ...] = ()

    def __post_init__(self):
        try:  # a policy config holds the mode as text; an unknown one is a bug upstream, said here
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise ValueError(f"Decision(mode={self.mode!r}): expected one of {[m.value for m in Mode]}") from None

    def to_dict(self) -> dict:
        return {
            "action": self.action.value,
            "step": self.step,
            "reason": self.reason,
            "target_step": self.target_step,
            "params": dict(self.params),
            "skip_batches": self.skip_batches,
            "mode": self.mode.value,
            "alerts": list(self.alerts),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        return cls(
            action=Action(d["action"]),
            step=int(d["step"]),
            reason=str(d.get("reason", "")),
            target_step=d.get("target_step"),
            params=dict(d.get("params") or {}),
            skip_batches=int(d.get("skip_batches", 0)),
            mode=Mode(d.get("mode", "auto")),
            alerts=tuple(d.get("alerts") or ()),
        )


class Disposition(StrEnum):
    """What carrying a decision out means, once its mode is read (see `disposition`)."""

    ACT = "act"    # carry it out now
    ASK = "ask"    # pause and wait for a person (or the approval timeout)
    SKIP = "skip"  # journal it with the outcome `skipped`: nothing is done


def disposition(d: Decision, *, someone_can_approve: bool, approve_on_timeout: bool) -> tuple[Disposition, str]:
    """The one reading of advise/approve/auto, for the supervisor, `rlguard watch` and replay.

    A notify is always carried out (the journal and the sinks are the act). Where nobody can
    answer an approval (watch, replay), an approve decision goes ahead only when the policies
    say `approval.on_timeout: approve`: that is what an unanswered request comes to anyway."""
    if d.action is Action.NOTIFY or d.mode is Mode.AUTO:
        return Disposition.ACT, ""
    if d.mode is Mode.ADVISE:
        return Disposition.SKIP, f"advise mode: would {d.action.value}; not carried out"
    if someone_can_approve:
        return Disposition.ASK, ""
    if approve_on_timeout:
        return Disposition.ACT, ""
    return Disposition.SKIP, "approve mode: nobody can approve here (approval.on_timeout is deny); not carried out"
