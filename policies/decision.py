"""The decision type every policy returns; one arbiter in the supervisor carries it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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
    mode: "auto" (act), "advise" (only notify what would be done), "approve" (ask a human).
    alerts: codes of the alerts that led to it.
    """

    action: Action
    step: int
    reason: str
    target_step: int | None = None
    params: dict = field(default_factory=dict)
    skip_batches: int = 0
    mode: str = "auto"
    alerts: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "action": self.action.value,
            "step": self.step,
            "reason": self.reason,
            "target_step": self.target_step,
            "params": dict(self.params),
            "skip_batches": self.skip_batches,
            "mode": self.mode,
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
            mode=str(d.get("mode", "auto")),
            alerts=tuple(d.get("alerts") or ()),
        )
