"""The policy settings: one pydantic model, a description per field, loaded from YAML.

Every field has a default that suits a small-to-medium PPO-RLHF run; a YAML file only
names what it changes. Unknown keys are errors (a typo must not silently fall back to a
default at 3 a.m.), and every error names the field and what to write instead.

Example (`policy.yaml`):

    cooldown_steps: 30
    rollback:
      budget: 2
      skip_batches: 200
    modes:
      rollback: approve        # tighten on its own, ask a human before rolling back
    approval:
      timeout_s: 900
      on_timeout: approve
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Mode = Literal["auto", "advise", "approve"]
"""auto: act. advise: only notify what would be done. approve: pause and ask an operator."""

"""The knobs the engine may turn, by their METRICS.md / trainer names."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KnobRule(_Strict):
    """How tightening moves one constraint, and the range it must stay in."""

    factor: float = Field(
        gt=0,
        description="Multiplier applied on each tighten (>1 raises the value, e.g. kl_coef; "
        "<1 lowers it, e.g. clip_range and lr). Relax divides by it, never past the initial value.",
    )
    min: float = Field(ge=0, description="Lowest value tightening may reach (inclusive).")
    max: float = Field(gt=0, description="Highest value tightening may reach (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> KnobRule:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}: swap them")
        if self.factor == 1.0:
            raise ValueError(
                "factor 1.0 would never change the value: use e.g. 1.5 (kl_coef) or 0.8 (clip_range)"
            )
        return self


class TightenConfig(_Strict):
    """Per-constraint tighten rules. A constraint the run does not report is left alone."""

    kl_coef: KnobRule = Field(
        default_factory=lambda: KnobRule(factor=1.5, min=0.0, max=1.0),
        description="KL penalty coefficient: raised by `factor` (stronger pull to the reference).",
    )
    clip_range: KnobRule = Field(
        default_factory=lambda: KnobRule(factor=0.8, min=0.02, max=1.0),
        description="PPO ratio clip range: lowered by `factor` (smaller policy steps).",
    )
    lr: KnobRule = Field(
        default_factory=lambda: KnobRule(factor=0.5, min=1e-8, max=1.0),
        description="Policy learning rate: lowered by `factor` (OPT-175B: roll back and cut the LR).",
    )

    def rule(self, name: str) -> KnobRule:
        return getattr(self, name)


class WarningConfig(_Strict):
    """When a warning stops being a notification and becomes a tighten."""

    persist_steps: int = Field(
        default=10,
        ge=0,
        description="A warning from the same detector on the same metric that is still true this many steps "
        "after its streak began (streak start = onset of its first alert, never before the last action) "
        "triggers a tighten. Still true = raised again within `gap_steps`, or listed in RunView.open_warnings "
        "(an incident the monitors keep open without re-alerting). 0 tightens on the first warning.",
    )
    gap_steps: int = Field(
        default=30,
        ge=1,
        description="A warning more than this many steps after the previous one of the same detector/metric "
        "starts a new streak (and a new notification) instead of continuing the old one. Keep it above the "
        "monitors' `incident.rearm_steps` (10), so that a warning that closes and comes back counts as persisting.",
    )


class RollbackConfig(_Strict):
    """What a critical alert does."""

    budget: int = Field(
        default=3,
        ge=0,
        description="Rollbacks allowed within `budget_window_steps`; the critical alert that would need one more "
        "halts the run instead. 0 halts on every critical alert.",
    )
    budget_window_steps: int = Field(
        default=500,
        ge=1,
        description="Length of the budget window in trained steps (steps trained again after a rollback count "
        "again: the clock never goes backwards).",
    )
    tighten: bool = Field(
        default=True, description="Also tighten the constraints with the rollback (BLOOM/OPT practice)."
    )
    skip_batches: int = Field(
        default=0,
        ge=0,
        description="Batches to skip after the restored data cursor (PaLM skipped 200-500 around a spike). "
        "0 replays the same data, which suits a policy collapse more than a bad-batch spike.",
    )
    margin_steps: int = Field(
        default=0,
        ge=0,
        description="The target checkpoint must be at least this many steps before the alert's onset "
        "(PaLM restarted ~100 steps before a spike): detection of the onset itself can lag.",
    )
    when_no_healthy_checkpoint: Literal["halt", "tighten"] = Field(
        default="halt",
        description="No healthy checkpoint before the onset: `halt` (page a human) or `tighten` only and go on.",
    )


class CooldownConfig(_Strict):
    """How alerts are treated right after an action, whose transient must not be a new incident."""

    steps: int = Field(
        default=20,
        ge=0,
        description="Trained steps after a tighten/rollback/relax during which warnings are not acted on "
        "(neither notified nor counted toward persistence): the action's own transient (KL and length "
        "shift when the constraints change) is not a new incident.",
    )
    critical_repeats: int = Field(
        default=1,
        ge=1,
        description="How many times the same detector/metric must go critical within one cooldown before it "
        "acts; earlier ones only notify. 1 (default): critical alerts always act, since rlguard's monitors "
        "raise critical only for compound patterns, bounds and non-finite values, never for the single-metric "
        "shift an action causes. Raise it only with detectors that re-alert while a condition holds: a held "
        "critical that does not repeat is not acted on later.",
    )
    always_act_codes: list[str] = Field(
        default_factory=lambda: ["non_finite"],
        description="Alert codes that act at once, ignore cooldown and count as critical whatever their severity.",
    )


class RelaxConfig(_Strict):
    """Moving constraints back toward their initial values after a long healthy stretch.

    Off by default: the constraints were tightened because the run went bad, and relaxing
    them unattended invites the same collapse again; a human turns this on per run (or uses
    `rlguard relax`)."""

    enabled: bool = Field(default=False, description="Relax automatically after `after_healthy_steps`.")
    after_healthy_steps: int = Field(
        default=200,
        ge=1,
        description="Alert-free trained steps (counted from the last alert or action) before one relax step.",
    )


class ModesConfig(_Strict):
    """Mode per action kind (notifications always go out)."""

    tighten: Mode = Field(default="auto", description="Mode of tighten decisions.")
    rollback: Mode = Field(default="auto", description="Mode of rollback decisions (e.g. `approve`).")
    relax: Mode = Field(default="auto", description="Mode of relax decisions.")
    halt: Mode = Field(default="auto", description="Mode of halt decisions (`advise` never stops the run).")


class ApprovalConfig(_Strict):
    """How the supervisor treats a decision in `approve` mode (the engine only stamps the mode)."""

    timeout_s: float = Field(
        default=1800.0, gt=0, description="Seconds to wait for `rlguard approve` before `on_timeout` applies."
    )
    on_timeout: Literal["deny", "approve"] = Field(
        default="deny",
        description="What an unanswered request turns into: `deny` (the run continues as is; a later "
        "alert escalates again) or `approve` (act as in `auto`).",
    )


class PolicyConfig(_Strict):
    """Everything the policy engine needs; see the field descriptions (`rlguard monitors --print-config`)."""

    tighten: TightenConfig = Field(default_factory=TightenConfig, description="Tighten factors and bounds.")
    warnings: WarningConfig = Field(default_factory=WarningConfig, description="Warning escalation.")
    rollback: RollbackConfig = Field(
        default_factory=RollbackConfig, description="Rollback on critical alerts."
    )
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig, description="Cooldown after actions.")
    relax: RelaxConfig = Field(default_factory=RelaxConfig, description="Relax after a healthy stretch.")
    modes: ModesConfig = Field(
        default_factory=ModesConfig, description="auto/advise/approve per action kind."
    )
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig, description="Approval timeouts.")
    notify_only_codes: list[str] = Field(
        default_factory=lambda: ["stall", "checkpoint_corrupt"],
        description="Alert codes that only notify, whatever their severity: a hung worker (stall) is the "
        "supervisor's liveness checks' job (restart), not a reason to tighten or roll back the training; a "
        "corrupt checkpoint is reported by the registry, which already skipped it.",
    )

    def mode_for(self, action: str) -> str:
        return "auto" if action == "notify" else getattr(self.modes, action)


class PolicyConfigError(ValueError):
    """A policy config that cannot be used; the message names the field and the fix."""


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid policy config ({source}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field: check the spelling against `PolicyConfig` (policies/config.py)"
        lines.append(f"  {where}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def policy_config_from_dict(data: dict | None, source: str = "<dict>") -> PolicyConfig:
    """Validate a mapping (e.g. the `policy:` section of a run config)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyConfigError(
            f"policy config ({source}) must be a mapping of fields, got {type(data).__name__}"
        )
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as e:
        raise PolicyConfigError(_describe(e, source)) from None


def load_policy_config(path: str | Path | None) -> PolicyConfig:
    """Read a YAML policy config; None gives the defaults."""
    if path is None:
        return PolicyConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise PolicyConfigError(f"policy config {path}: cannot read it ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyConfigError(f"policy config {path}: not valid YAML ({e})") from None
    return policy_config_from_dict(data, str(path))
