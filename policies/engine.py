"""The policy engine: alerts and a view of the run in, at most one decision per step out.

The escalation ladder, in the order it is checked each step:

1. A critical alert (or one whose code is in `cooldown.always_act_codes`, e.g. non_finite,
   whatever its severity) -> ROLLBACK to the newest HEALTHY checkpoint before the alert's
   onset (minus `rollback.margin_steps`), tightening the constraints with it, skipping
   `rollback.skip_batches` batches. If `rollback.budget` rollbacks already happened within
   `rollback.budget_window_steps` -> HALT. No healthy checkpoint -> HALT (or TIGHTEN when
   `rollback.when_no_healthy_checkpoint: tighten`). With several critical alerts the one
   with the earliest onset leads: the rollback must go before all of them.
2. A warning that persists -> TIGHTEN: the same detector and metric still true
   `warnings.persist_steps` steps after its onset (or after the last action, whichever is
   later). "Still true" = raised again within `warnings.gap_steps` (rlguard's monitors
   alert once per incident and re-alert after it closes and comes back), or listed in
   `RunView.open_warnings` (an incident the monitors keep open). A warning still true
   `persist_steps` after a tighten tightens again, up to the bounds; once every knob is at
   its bound -> NOTIFY saying so (nothing left to turn; a critical alert will roll back).
3. The first warning of a streak -> NOTIFY.
4. No alert for `relax.after_healthy_steps` steps, constraints tighter than the initial
   values and relax enabled -> RELAX one step toward the initial values.

Alerts whose code is in `notify_only_codes` (stall, checkpoint_corrupt) only ever notify.

Cooldown: after a tighten, rollback or relax, for `cooldown.steps` trained steps, warnings
are dropped (the action's own transient must not count as a new incident or toward
persistence). Critical alerts act in cooldown by default (they mean a bad regime, not a
transient, and the rollback budget bounds the loop); with `cooldown.critical_repeats` N > 1
a critical alert only notifies until the same detector/metric has gone critical N times in
that cooldown. Codes in `always_act_codes` (non_finite: a NaN is never a transient) always act.

Clock: steps go backwards after a rollback, so cooldowns and the rollback budget run on a
"trained steps" clock that only moves forward: each call adds the steps since the previous
call (0 when the step went back). Call `decide` once per step, with an empty alert list on
quiet steps, so that cooldown, persistence and relax see time pass.

Modes: the engine reasons as if every decision it returns is carried out (an `advise`
rollback spends budget and starts a cooldown just like an `auto` one, so the advice shows
exactly what auto mode would have done) except that an advised halt does not stop the
engine. When an `approve` or `auto` decision is denied or fails, tell the engine with
`note_outcome` so that the budget is refunded / the halt lifted.

State: `state_dict()`/`load_state_dict()` round-trip everything. `replay_journal(...)`
rebuilds the budget, cooldown, halt and relax state from past decisions (warning streaks
are not journaled and start empty, which at worst delays a tighten by `persist_steps`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rlguard.monitors.alerts import Alert, AlertCode, Severity
from rlguard.policies import constraints as knobs
from rlguard.policies.config import PolicyConfig
from rlguard.policies.decision import OUTCOME_PHASES, Action, Decision, Mode
from rlguard.policies.view import CheckpointView, Health, RunView, warning_key

__all__ = ["PolicyEngine", "RunView", "CheckpointView", "Health"]



def _key(alert: Alert) -> str:
    return warning_key(alert.detector, alert.metric)


def _head(alert: Alert, critical: bool) -> str:
    sev = "critical" if critical else alert.severity.value
    on = f" on {alert.metric}" if alert.metric else ""
    return f"{sev} {alert.code}{on} at step {alert.step} (onset {alert.onset_step})"


def _tail(alert: Alert) -> str:
    return f"; alert: {alert.message}" if alert.message else ""


@dataclass
class _Streak:
    """A run of warnings from one detector on one metric, on the trained-steps clock."""

    first: int
    last: int


class PolicyEngine:
    """Pure decision logic; no I/O. See the module docstring for the rules."""

    def __init__(self, cfg: PolicyConfig | None = None):
        self.cfg = cfg or PolicyConfig()
        self._clock = 0
        self._last_step: int | None = None
        self._streaks: dict[str, _Streak] = {}
        self._codes: dict[str, str] = {}  # last warning code per detector/metric, for open incidents
        self._cooldown_until: int | None = None
        self._cooldown_criticals: dict[str, int] = {}
        self._rollbacks: list[tuple[int, int]] = []  # (clock, decided step) of each rollback
        self._quiet_since = 0
        self._last_action: int | None = None  # clock of the last tighten/rollback/relax
        self._halted: str | None = None

    # ------------------------------------------------------------------ public API

    @property
    def halted(self) -> str | None:
        """The reason of the halt in force, or None."""
        return self._halted

    @property
    def trained_steps(self) -> int:
        return self._clock

    def in_cooldown(self) -> bool:
        return self._cooldown_until is not None and self._clock < self._cooldown_until

    def decide(self, step: int, alerts: Sequence[Alert], view: RunView) -> list[Decision]:
        """Decisions for this step: empty, or exactly one (the highest-priority action)."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"decide(step=...): step must be an int >= 0, got {step!r}")
        for a in alerts:
            if not isinstance(a, Alert):
                raise TypeError(f"decide(alerts=...): expected rlguard.monitors.alerts.Alert, got {type(a).__name__}")
        self._advance(step)
        if self._halted is not None:
            return []
        if not self.in_cooldown():
            self._cooldown_criticals.clear()
        if alerts or view.open_warnings:
            self._quiet_since = self._clock

        always = set(self.cfg.cooldown.always_act_codes)
        notify_only = [a for a in alerts if a.code in self.cfg.notify_only_codes]
        acting = [a for a in alerts if a.code not in self.cfg.notify_only_codes]
        criticals = [a for a in acting if a.severity is Severity.CRITICAL or a.code in always]
        warnings = [a for a in acting if a not in criticals]

        escalating, held = self._split_by_cooldown(criticals, always)
        if escalating:
            return [self._on_critical(step, escalating, alerts, view)]
        if held:
            return [self._notify_held(step, held, alerts)]
        if (warnings or view.open_warnings) and not self.in_cooldown():
            decision = self._on_warnings(step, warnings, alerts, view)
            if decision is not None:
                return [decision]
        if notify_only:
            texts = [f"{_head(a, a.severity is Severity.CRITICAL)}{_tail(a)}" for a in notify_only]
            reason = f"{'; '.join(texts)}; notify only ({', '.join(sorted({a.code for a in notify_only}))})"
            return [self._emit(Action.NOTIFY, step, reason, tuple(a.code for a in alerts))]
        if not alerts and not view.open_warnings:
            decision = self._maybe_relax(step, view)
            return [decision] if decision else []
        return []

    def note_outcome(self, decision: Decision, phase: str) -> None:
        """Tell the engine how a decision ended (journal phases: done/failed/skipped/denied).

        A rollback that did not happen gives its budget back and the step clock its position;
        a halt that did not happen lifts the halt. Advised decisions are ignored (the engine
        already treats them as hypothetical)."""
        if phase not in OUTCOME_PHASES:
            raise ValueError(f"note_outcome(phase=...): expected one of {[p.value for p in OUTCOME_PHASES]}, got {phase!r}")
        if phase == "done" or decision.mode is Mode.ADVISE:
            return
        if decision.action is Action.ROLLBACK:
            for i in range(len(self._rollbacks) - 1, -1, -1):
                if self._rollbacks[i][1] == decision.step:
                    del self._rollbacks[i]
                    break
            self._last_step = decision.step
        elif decision.action is Action.HALT:
            self._halted = None

    def sync_step(self, step: int) -> None:
        """The run is at `step` now, though no decision said so: e.g. a rollback went to an older
        checkpoint than decided (the target was corrupt), or a replay whose recording does not
        rewind. Keeps the trained-steps clock exact; no time passes."""
        self._last_step = int(step)

    def lift_halt(self) -> None:
        """An operator resumed a halted run: decide again, with a fresh rollback budget (a human
        has looked at it; the next critical alert rolls back instead of halting at once)."""
        self._halted = None
        self._rollbacks.clear()

    def replay_journal(self, decisions: Iterable[Decision | dict | tuple]) -> None:
        """Rebuild state from past policy decisions in journal order (Journal.decision_history).

        Each item is a Decision, a Decision dict, or a (Decision|dict, phase) pair where phase
        is the journal outcome (None = decided but never finished: counted as done, so a
        restarted supervisor never gets more rollbacks than the budget allows). A halt that was
        carried out ended the run, so replaying the journal of a run being resumed after it
        lifts it (`lift_halt`); a halt still pending stays in force."""
        for item in decisions:
            phase = None
            if isinstance(item, tuple):
                item, phase = item
            d = item if isinstance(item, Decision) else Decision.from_dict(item)
            self._advance(d.step)
            self._apply(d)
            if phase is not None:
                self.note_outcome(d, phase)
            if d.action is Action.HALT and phase == "done" and d.mode is not Mode.ADVISE:
                self.lift_halt()

    def state_dict(self) -> dict:
        return {
            "version": 1,
            "clock": self._clock,
            "last_step": self._last_step,
            "streaks": {k: [s.first, s.last] for k, s in self._streaks.items()},
            "codes": dict(self._codes),
            "cooldown_until": self._cooldown_until,
            "cooldown_criticals": dict(self._cooldown_criticals),
            "rollbacks": [list(r) for r in self._rollbacks],
            "quiet_since": self._quiet_since,
            "last_action": self._last_action,
            "halted": self._halted,
        }

    def load_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict) or d.get("version") != 1:
            raise ValueError("PolicyEngine.load_state_dict: not a version-1 engine state (from state_dict())")
        self._clock = int(d["clock"])
        self._last_step = None if d["last_step"] is None else int(d["last_step"])
        self._streaks = {k: _Streak(int(v[0]), int(v[1])) for k, v in d["streaks"].items()}
        self._codes = {str(k): str(v) for k, v in d.get("codes", {}).items()}
        self._cooldown_until = None if d["cooldown_until"] is None else int(d["cooldown_until"])
        self._cooldown_criticals = {k: int(v) for k, v in d["cooldown_criticals"].items()}
        self._rollbacks = [(int(c), int(s)) for c, s in d["rollbacks"]]
        self._quiet_since = int(d["quiet_since"])
        self._last_action = None if d.get("last_action") is None else int(d["last_action"])
        self._halted = d["halted"]

    # ------------------------------------------------------------------ the ladder

    def _split_by_cooldown(self, criticals: list[Alert], always: set[str]) -> tuple[list[Alert], list[Alert]]:
        """Criticals that act now vs. those held back (notified only) by the cooldown."""
        if not self.in_cooldown():
            return criticals, []
        escalating, held = [], []
        for a in criticals:
            n = self._cooldown_criticals.get(_key(a), 0) + 1
            self._cooldown_criticals[_key(a)] = n
            if a.code in always or n >= self.cfg.cooldown.critical_repeats:
                escalating.append(a)
            else:
                held.append(a)
        return escalating, held

    def _on_critical(
        self, step: int, criticals: list[Alert], alerts: Sequence[Alert], view: RunView
    ) -> Decision:
        lead = min(criticals, key=lambda a: (a.onset_step, a.step))
        head = _head(lead, critical=True)
        codes = tuple(a.code for a in alerts)
        rb = self.cfg.rollback
        window_start = self._clock - rb.budget_window_steps
        recent = [s for c, s in self._rollbacks if c > window_start]
        if len(recent) >= rb.budget:
            at = ", ".join(str(s) for s in recent) or "none"
            reason = (
                f"{head}: halt: rollback budget spent ({len(recent)} of {rb.budget} in the last "
                f"{rb.budget_window_steps} steps, at steps {at}){_tail(lead)}"
            )
            return self._emit(Action.HALT, step, reason, codes)

        before = lead.onset_step - rb.margin_steps
        target = view.newest_healthy_before(before)
        changes = knobs.tighten(view.constraints, self.cfg.tighten) if rb.tighten else []
        if target is None:
            known = _health_summary(view.checkpoints)
            missing = f"no healthy checkpoint before step {before} (known: {known})"
            if view.checkpoint_write_failures:
                n = view.checkpoint_write_failures
                missing += (f"; {n} checkpoint write{'s' if n > 1 else ''} failed "
                            "(checkpoint_failures: disk full? see the worker log)")
            if rb.when_no_healthy_checkpoint == "halt":
                return self._emit(Action.HALT, step, f"{head}: halt: {missing}{_tail(lead)}", codes)
            changes = knobs.tighten(view.constraints, self.cfg.tighten)
            reason = f"{head}: {missing}: tighten only, {knobs.describe(changes)}{_tail(lead)}"
            return self._emit(Action.TIGHTEN, step, reason, codes, params=knobs.params_of(changes))

        parts = [f"rollback to step {target.step}"]
        if changes:
            parts.append(knobs.describe(changes))
        if rb.skip_batches:
            parts.append(f"skip {rb.skip_batches} batches")
        parts.append(f"rollback {len(recent) + 1} of {rb.budget} in {rb.budget_window_steps} steps")
        reason = f"{head}: {', '.join(parts)}{_tail(lead)}"
        return self._emit(
            Action.ROLLBACK,
            step,
            reason,
            codes,
            target_step=target.step,
            params=knobs.params_of(changes),
            skip_batches=rb.skip_batches,
        )

    def _notify_held(self, step: int, held: list[Alert], alerts: Sequence[Alert]) -> Decision:
        lead = held[0]
        until = step + (self._cooldown_until or 0) - self._clock
        n = self._cooldown_criticals[_key(lead)]
        reason = (
            f"{_head(lead, critical=True)}: in cooldown until about step {until}: notify only "
            f"({n} of {self.cfg.cooldown.critical_repeats} repeats before it escalates){_tail(lead)}"
        )
        return self._emit(Action.NOTIFY, step, reason, tuple(a.code for a in alerts))

    def _on_warnings(
        self, step: int, warnings: list[Alert], alerts: Sequence[Alert], view: RunView
    ) -> Decision | None:
        wc = self.cfg.warnings
        fresh, persistent = [], []
        # An open incident is a warning that is still true this step, though not raised again.
        seen = {_key(a): (a, True) for a in warnings}
        self._codes.update({_key(a): a.code for a in warnings})
        for key, onset in view.open_warnings.items():
            if key not in seen:
                detector, _, metric = key.partition("/")
                code = self._codes.get(key, AlertCode.INCIDENT_OPEN)
                still = Alert(
                    code, detector, metric, step, Severity.WARNING, int(onset), "incident still open"
                )
                seen[key] = (still, False)
        for key, (a, raised) in seen.items():
            s = self._streaks.get(key)
            if s is None or self._clock - s.last > wc.gap_steps:
                # Count from the onset, but never from before the last action: what came before
                # has been answered already.
                start = self._clock - max(0, step - a.onset_step)
                if self._last_action is not None:
                    start = max(start, self._last_action)
                s = self._streaks[key] = _Streak(start, self._clock)
                if raised:
                    fresh.append(a)
            s.last = self._clock
            if self._clock - s.first >= wc.persist_steps:
                persistent.append((a, self._clock - s.first))
        if persistent:
            lead, span = max(persistent, key=lambda p: p[1])
            codes = tuple(a.code for a in alerts) or (lead.code,)
            on = f" on {lead.metric}" if lead.metric else ""
            head = f"warning {lead.code}{on} persisted {span} steps (since step {step - span}, now {step})"
            changes = knobs.tighten(view.constraints, self.cfg.tighten)
            self._streaks.clear()
            if not any(c.changed for c in changes):
                reason = f"{head}: cannot tighten further: {knobs.describe(changes)}{_tail(lead)}"
                return self._emit(Action.NOTIFY, step, reason, codes)
            reason = f"{head}: tighten {knobs.describe(changes)}{_tail(lead)}"
            return self._emit(Action.TIGHTEN, step, reason, codes, params=knobs.params_of(changes))
        if fresh:
            codes = tuple(a.code for a in alerts)
            texts = [f"{_head(a, critical=False)}{_tail(a)}" for a in fresh]
            reason = f"{'; '.join(texts)}; tighten if it persists {wc.persist_steps} steps"
            return self._emit(Action.NOTIFY, step, reason, codes)
        return None

    def _maybe_relax(self, step: int, view: RunView) -> Decision | None:
        rc = self.cfg.relax
        quiet = self._clock - self._quiet_since
        if not rc.enabled or self.in_cooldown() or quiet < rc.after_healthy_steps:
            return None
        changes = knobs.relax(view.constraints, view.initial_constraints, self.cfg.tighten)
        if not changes:
            return None
        reason = (
            f"{quiet} steps without alerts (>= {rc.after_healthy_steps}): relax {knobs.describe(changes)}"
        )
        return self._emit(Action.RELAX, step, reason, (), params=knobs.params_of(changes))

    # ------------------------------------------------------------------ bookkeeping

    def _emit(self, action: Action, step: int, reason: str, codes: tuple[str, ...], **kw) -> Decision:
        d = Decision(
            action=action, step=step, reason=reason, mode=self.cfg.mode_for(action.value), alerts=codes, **kw
        )
        self._apply(d)
        return d

    def _apply(self, d: Decision) -> None:
        """The engine-side effects of a decision (shared by decide and replay_journal)."""
        if d.action is Action.NOTIFY:
            return
        if d.action is Action.HALT:
            if d.mode is not Mode.ADVISE:
                self._halted = d.reason
            return
        self._cooldown_until = self._clock + self.cfg.cooldown.steps
        self._cooldown_criticals.clear()
        self._streaks.clear()
        self._quiet_since = self._clock
        self._last_action = self._clock
        if d.action is Action.ROLLBACK:
            self._rollbacks.append((self._clock, d.step))
            # The next step reported is target + 1: counting from the target keeps the clock exact.
            if d.target_step is not None:
                self._last_step = int(d.target_step)
            # Old entries can never count again: keep the state small on long runs.
            horizon = self._clock - self.cfg.rollback.budget_window_steps
            self._rollbacks = [r for r in self._rollbacks if r[0] > horizon]

    def _advance(self, step: int) -> None:
        if self._last_step is not None and step > self._last_step:
            self._clock += step - self._last_step
        self._last_step = step


def _health_summary(checkpoints: Sequence[CheckpointView]) -> str:
    if not checkpoints:
        return "none"
    counts: dict[str, int] = {}
    for c in checkpoints:
        h = Health(c.health).value
        counts[h] = counts.get(h, 0) + 1
    return ", ".join(f"{n} {h}" for h, n in sorted(counts.items()))
