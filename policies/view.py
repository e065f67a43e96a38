"""What the policy engine sees of a run: a read-only snapshot the supervisor builds per step."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from rlguard.monitors.alerts import Alert, Severity

DEFAULT_CONFIRM_STEPS = 20
"""Alert-free steps after a checkpoint before it counts as healthy (registry and replay)."""


class Health(StrEnum):
    """Checkpoint health (written by the registry, read by the engine).

    PENDING: written, its confirmation window has not passed yet.
    HEALTHY: the confirmation window passed without an alert whose onset falls in it.
    SUSPECT: an alert's onset is at or before its step + window (it may hold the bad regime),
        or it belongs to a timeline abandoned by a rollback before it was confirmed.
    CORRUPT: failed checksum verification; never loaded.

    Transitions: PENDING -> HEALTHY | SUSPECT; HEALTHY -> SUSPECT (a late alert with an early
    onset); any -> CORRUPT. Only HEALTHY checkpoints are rollback targets.
    """

    PENDING = "pending"
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    CORRUPT = "corrupt"


def warning_key(detector: str, metric: str) -> str:
    """How the engine names one detector's findings on one metric (streaks, open incidents)."""
    return f"{detector}/{metric}"


@dataclass(frozen=True)
class CheckpointView:
    """One checkpoint as the engine needs it: its step and its health."""

    step: int
    health: Health | str

    @property
    def is_healthy(self) -> bool:
        return Health(self.health) is Health.HEALTHY


@dataclass(frozen=True)
class RunView:
    """The run at the moment of a decision.

    step: the step the alerts were raised at (the current step).
    constraints: the values in force now, e.g. {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-6};
        knobs missing here are never changed.
    initial_constraints: the values the run started with (relax never goes past them).
    checkpoints: every checkpoint the registry knows, any order.
    open_warnings: optional, warning incidents still open in the monitors, as
        {warning_key(detector, metric): onset_step}. rlguard's monitors raise one alert per
        incident and then stay silent while it lasts, so only this tells the engine that a
        warning is still true; without it a warning "persists" only by coming back.
    checkpoint_write_failures: checkpoints the worker could not write (its `checkpoint_failures`
        metric, summed over its processes). They never reach `checkpoints`; a decision that finds
        no rollback target says so, since a full disk reads like "no healthy checkpoint" otherwise.
    """

    step: int
    constraints: Mapping[str, float] = field(default_factory=dict)
    initial_constraints: Mapping[str, float] = field(default_factory=dict)
    checkpoints: Sequence[CheckpointView] = ()
    open_warnings: Mapping[str, int] = field(default_factory=dict)
    checkpoint_write_failures: int = 0

    def newest_healthy_before(self, step: int) -> CheckpointView | None:
        """The newest HEALTHY checkpoint with checkpoint.step < step, or None."""
        best = None
        for c in self.checkpoints:
            if c.is_healthy and c.step < step and (best is None or c.step > best.step):
                best = c
        return best


def next_health(
    health: Health | str,
    ckpt_step: int,
    step: int,
    alerts: Sequence[Alert],
    confirm_steps: int = DEFAULT_CONFIRM_STEPS,
    min_severity: Severity = Severity.WARNING,
    ignore_codes: Collection[str] = ("stall", "checkpoint_corrupt"),
) -> Health:
    """The one health rule, shared by the registry and replay.

    A checkpoint at `ckpt_step` becomes SUSPECT when an alert (of at least `min_severity`)
    has onset <= ckpt_step + confirm_steps: the bad regime may have started before it was
    written or while it was being confirmed, and detection lags onset, so this also demotes
    a HEALTHY one. Otherwise a PENDING one becomes HEALTHY once `step` reaches
    ckpt_step + confirm_steps. SUSPECT and CORRUPT are final. Alerts with a code in
    `ignore_codes` say nothing about the model's state (a hung worker, a bad file elsewhere).

    A checkpoint at step 0 holds the starting weights, which no update has touched: no
    training regime can have begun before it, so it has no confirmation window (healthy at
    once, suspect only for an onset at step 0, which a training alert never has)."""
    health = Health(health)
    if ckpt_step == 0:
        confirm_steps = 0
    if health in (Health.SUSPECT, Health.CORRUPT):
        return health
    for a in alerts:
        if a.code in ignore_codes:
            continue
        if a.severity.rank >= min_severity.rank and a.onset_step <= ckpt_step + confirm_steps:
            return Health.SUSPECT
    if health is Health.PENDING and step >= ckpt_step + confirm_steps:
        return Health.HEALTHY
    return health
