"""Small builders for scripted alert sequences."""

from __future__ import annotations

from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.view import CheckpointView, RunView

INITIAL = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-6}


def warn(
    step: int, metric: str = "kl", code: str = "spike", onset: int | None = None, msg: str = ""
) -> Alert:
    return Alert(
        code, f"{metric}_{code}", metric, step, Severity.WARNING, step if onset is None else onset, msg
    )


def crit(step: int, onset: int, metric: str = "kl", code: str = "pattern_collapse", msg: str = "") -> Alert:
    return Alert(code, f"{metric}_{code}", metric, step, Severity.CRITICAL, onset, msg)


def view(step: int, healthy=(), constraints=None, initial=None, other=()) -> RunView:
    cks = [CheckpointView(s, "healthy") for s in healthy] + [CheckpointView(s, h) for s, h in other]
    return RunView(step, dict(constraints or INITIAL), dict(initial or INITIAL), cks)
