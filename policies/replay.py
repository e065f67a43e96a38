"""What the policies would have done on a recorded metric stream (`rlguard replay`).

A recording cannot be rewound, so the simulator pretends: a checkpoint is "written" every
`checkpoint_every` steps (and, with `checkpoint_start`, of the starting state as step 0, as
rlguard's built-in worker does by default), its health follows the alerts exactly as the live registry's does
(policies.view.next_health), and the constraint values follow the simulator's own tighten,
relax and rollback decisions, starting from the first event's kl_coef/clip_range/lr. The
recorded steps keep coming after a simulated rollback (the engine's trained-steps clock
counts them as it would count the re-trained steps of a live run), so everything after
the first rollback shows what the policies would say about a run that was not rolled back.

Modes are simulated as an unattended run would see them: `auto` decisions are applied;
`approve` ones are applied only when `approval.on_timeout` is `approve` (nobody answers a
replay); `advise` ones change nothing but the engine's own bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rlguard.monitors.alerts import Alert, Severity
from rlguard.policies.config import PolicyConfig
from rlguard.policies.decision import (
    CONSTRAINT_NAMES,
    Action,
    Decision,
    Disposition,
    Mode,
    Phase,
    disposition,
)
from rlguard.policies.engine import PolicyEngine
from rlguard.policies.view import DEFAULT_CONFIRM_STEPS, CheckpointView, Health, RunView, next_health


class ReplaySimulator:
    """Feed it the alerts of each recorded step, in order; it returns the decisions."""

    def __init__(
        self,
        policy_config: PolicyConfig | None = None,
        checkpoint_every: int = 50,
        confirm_steps: int = DEFAULT_CONFIRM_STEPS,
        suspect_min_severity: Severity = Severity.WARNING,
        checkpoint_start: bool = False,
    ):
        if checkpoint_every < 1:
            raise ValueError(f"ReplaySimulator(checkpoint_every=...): must be >= 1, got {checkpoint_every}")
        if confirm_steps < 0:
            raise ValueError(f"ReplaySimulator(confirm_steps=...): must be >= 0, got {confirm_steps}")
        self.cfg = policy_config or PolicyConfig()
        self.engine = PolicyEngine(self.cfg)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_start = checkpoint_start
        self.confirm_steps = confirm_steps
        self.suspect_min_severity = Severity(suspect_min_severity)
        self.checkpoints: dict[int, Health] = {}
        self.constraints: dict[str, float] = {}
        self.initial_constraints: dict[str, float] = {}
        self.decisions: list[Decision] = []
        self.applied: list[Decision] = []
        self._seen_first = False
        self._last_step: int | None = None

    @property
    def halted(self) -> bool:
        return self.engine.halted is not None

    def checkpoint_views(self) -> list[CheckpointView]:
        return [CheckpointView(s, h) for s, h in sorted(self.checkpoints.items())]

    def observe(
        self, step: int, alerts: Sequence[Alert], metrics: Mapping[str, float] | None = None
    ) -> list[Decision]:
        """One recorded step: update checkpoint health, decide, apply, maybe write a checkpoint."""
        if not self._seen_first:
            self._seen_first = True
            self._take_initial(metrics or {})
            if self.checkpoint_start:
                self.checkpoints[0] = Health.PENDING  # written before the first update
        if self._last_step is not None and step <= self._last_step:
            # The recording itself went back (a real rollback): later checkpoints are of an
            # abandoned timeline and will be written again.
            self.checkpoints = {s: h for s, h in self.checkpoints.items() if s < step}
        self._last_step = step

        for s, h in list(self.checkpoints.items()):
            self.checkpoints[s] = next_health(
                h, s, step, alerts, self.confirm_steps, self.suspect_min_severity
            )

        view = RunView(step, dict(self.constraints), dict(self.initial_constraints), self.checkpoint_views())
        decisions = self.engine.decide(step, list(alerts), view)
        for d in decisions:
            self.decisions.append(d)
            self._apply(d)

        if not self.halted and step > 0 and step % self.checkpoint_every == 0:
            self.checkpoints[step] = Health.PENDING
        return decisions

    def summary(self) -> dict:
        """Counts per action and the final state, for the replay report."""
        counts = {a.value: 0 for a in Action}
        for d in self.decisions:
            counts[d.action.value] += 1
        return {
            "decisions": counts,
            "applied": len(self.applied),
            "halted": self.engine.halted,
            "constraints": dict(self.constraints),
            "initial_constraints": dict(self.initial_constraints),
            "checkpoints": {str(s): h.value for s, h in sorted(self.checkpoints.items())},
        }

    # ------------------------------------------------------------------

    def _take_initial(self, metrics: Mapping[str, float]) -> None:
        for name in CONSTRAINT_NAMES:
            v = metrics.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.constraints[name] = float(v)
                self.initial_constraints[name] = float(v)

    def _apply(self, d: Decision) -> None:
        if d.action is Action.NOTIFY:
            return
        how, _ = disposition(d, someone_can_approve=False,  # nobody answers a replay
                             approve_on_timeout=self.cfg.approval.on_timeout == "approve")
        if how is not Disposition.ACT:
            if d.mode is Mode.APPROVE:
                self.engine.note_outcome(d, Phase.DENIED)
            return
        self.applied.append(d)
        self.constraints.update(d.params)
        if d.action is Action.ROLLBACK:
            # The recording goes on from d.step, not from the target: count only steps that pass.
            self.engine.sync_step(d.step)
