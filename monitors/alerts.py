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


class AlertCode(StrEnum):
    """Why an alert was raised: stable names that alert rules, policies and dashboards key on."""

    # statistical and rule detectors (monitors/detectors.py)
    NON_FINITE = "non_finite"
    BOUND = "bound"
    SPIKE = "spike"
    DRIFT = "drift"
    CHANGE_POINT = "change_point"
    # collapse patterns (monitors/patterns.py)
    PATTERN_COLLAPSE = "pattern_collapse"
    EMPTY_ANSWERS = "empty_answers"
    GIBBERISH = "gibberish"
    NEGATIVE_KL = "negative_kl"
    KL_RUNAWAY = "kl_runaway"
    EVAL_LONG_TAIL = "eval_long_tail"
    # failure regimes read off the action space (monitors/regimes.py)
    RANDOM_TOKENS = "random_tokens"
    REPETITION = "repetition"
    MODE_COLLAPSE = "mode_collapse"
    LENGTH_COLLAPSE = "length_collapse"
    LENGTH_RUNAWAY = "length_runaway"
    PINNED_AT_CAP = "pinned_at_cap"
    REWARD_COLLAPSE = "reward_collapse"
    KL_EXPLOSION = "kl_explosion"
    # the run itself
    STALL = "stall"
    CHECKPOINT_CORRUPT = "checkpoint_corrupt"
    # a warning incident still open though not raised again, whose code the policy engine has
    # not seen (it was raised before a supervisor restart)
    INCIDENT_OPEN = "incident_open"


@dataclass(frozen=True)
class Alert:
    """One finding of one detector at one step.

    code: machine-readable reason (AlertCode; stable: alert rules and policies key on it).
    detector: the name of the detector instance that raised it (config key).
    metric: the metric it is about (the leading one for compound detectors).
    step: the step at which it was raised (detection time).
    severity: warning or critical.
    onset_step: the estimated first step of the bad regime (<= step); rollback targets
        a checkpoint before it, because detection lags onset.
    message: for people, carrying the numbers ("kl = 0.31 > 0.20 for 3 steps").
    """

    code: AlertCode
    detector: str
    metric: str
    step: int
    severity: Severity
    onset_step: int
    message: str

    def __post_init__(self):
        try:
            object.__setattr__(self, "code", AlertCode(self.code))
        except ValueError:
            raise ValueError(f"Alert(code={self.code!r}): not a known alert code; expected one of "
                             f"{', '.join(c.value for c in AlertCode)}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["code"] = self.code.value
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
