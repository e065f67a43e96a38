"""The alert type every detector emits: reasons are data, with the numbers in the message."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    """How bad an alert is.

    WARNING: worth a look, maybe tighten the constraints.
    CRITICAL: the run is (or is about to be) in a bad regime: roll back or halt.
    """

    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return 1 if self is Severity.CRITICAL else 0


@dataclass(frozen=True)
class Alert:
    """One finding of one detector at one step.

    code: machine-readable reason, e.g. "non_finite", "spike", "change_point",
        "pattern_collapse", "stall" (stable: alert rules and policies key on it).
    detector: the name of the detector instance that raised it (config key).
    metric: the metric it is about (the leading one for compound detectors).
    step: the step at which it was raised (detection time).
    severity: warning or critical.
    onset_step: the estimated first step of the bad regime (<= step); rollback targets
        a checkpoint before it, because detection lags onset.
    message: for people, carrying the numbers ("kl = 0.31 > 0.20 for 3 steps").
    """

    code: str
    detector: str
    metric: str
    step: int
    severity: Severity
    onset_step: int
    message: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Alert:
        return cls(
            code=str(d["code"]),
            detector=str(d.get("detector", d["code"])),
            metric=str(d.get("metric", "")),
            step=int(d["step"]),
            severity=Severity(d["severity"]),
            onset_step=int(d.get("onset_step", d["step"])),
            message=str(d.get("message", "")),
        )
