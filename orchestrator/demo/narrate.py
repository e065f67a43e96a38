"""The demo's narrator: a RunSink that prints one line per thing that happens, with the numbers.

    step   7 | reward  0.475 | kl 2.340 | ppl 1.62 | distinct_2 0.605 | len 32.0
    ALERT    step 5 critical | detector patterns, code pattern_collapse, metric kl | <the numbers> (onset step 4)
    DECIDE   step 5 rollback -> step 2, kl_coef 0.02->0.06, lr 0.0003->0.00015: <reason>
    DONE     rollback: restored step 2
    CKPT     step 4 healthy

It also keeps the counts the demo's summary needs (first alert, detection delay, rollbacks),
so the summary does not have to re-read the journal. Called on the supervisor's loop thread:
it only formats and prints (cheap). `StepNarrator` prints the same step lines for the
unguarded twin, which has no supervisor.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rlguard.policies.decision import CONSTRAINT_NAMES

STEP_METRICS = (("reward", "reward", "{:+.3f}"), ("kl", "kl", "{:.3f}"), ("perplexity", "ppl", "{:.2f}"),
                ("distinct_2", "distinct_2", "{:.3f}"), ("response_length", "len", "{:.1f}"))


def step_line(tag: str, step: int, metrics: dict) -> str:
    parts = []
    for key, short, fmt in STEP_METRICS:
        if key in metrics:
            parts.append(f"{short} {fmt.format(float(metrics[key]))}")
    evals = [f"{k} {float(v):.3g}" for k, v in metrics.items() if k in ("eval_reward", "eval_distinct_2")]
    return f"[{tag}] step {step:3d} | " + " | ".join(parts + evals)


def latest_sample(path: Path | None) -> dict | None:
    """The best-rewarded sample of the step written last to samples.jsonl (the worker writes it right
    after reporting the step, so this may be the step before the alert's)."""
    if path is None or not path.is_file():
        return None
    rows = []
    for line in path.read_text(errors="replace").splitlines()[-64:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    rows = [r for r in rows if isinstance(r, dict) and {"step", "prompt", "response", "reward"} <= set(r)]
    if not rows:
        return None
    # The last line's step, not the highest: after a rollback the file also holds the abandoned
    # timeline's later steps.
    last = rows[-1]["step"]
    tail = []
    for r in reversed(rows):
        if r["step"] != last:
            break
        tail.append(r)
    return max(tail, key=lambda r: r["reward"])


def _fmt_params(params: dict, before: dict) -> str:
    out = []
    for k, v in params.items():
        old = before.get(k)
        out.append(f"{k} {old:.3g}->{float(v):.3g}" if isinstance(old, (int, float)) else f"{k}={float(v):.3g}")
    return ", ".join(out)


@dataclass
class Incident:
    """One alert the narrator saw (for the summary: detection delay = step - onset_step)."""

    step: int
    onset_step: int
    code: str
    metric: str
    severity: str
    message: str
    detector: str = ""

    def line(self) -> str:
        """Which detector fired, its alert code, the metric and the numbers (the alert's message)."""
        return (f"step {self.step} {self.severity} | detector {self.detector or '?'}, code {self.code}, "
                f"metric {self.metric or '-'} | {self.message} (onset step {self.onset_step})")


@dataclass
class NarratorSink:
    """Prints the supervised run as it happens; counts what the summary reports."""

    tag: str = "guarded"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    steps: bool = True  # print a line per step (off: only alerts, decisions, checkpoints)
    alerts: list[Incident] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)  # Decision.to_dict() + phase/outcome
    constraints: dict = field(default_factory=dict)  # last reported kl_coef/clip_range/lr
    last_step: int = 0
    samples_path: Path | None = None  # RUN/samples.jsonl: quoted at a critical alert (what the policy writes)

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def on_event(self, event) -> None:
        self.last_step = event.step
        for k in CONSTRAINT_NAMES:
            if k in event.metrics:
                self.constraints[k] = float(event.metrics[k])
        if self.steps:
            self._say(step_line(self.tag, event.step, event.metrics))

    def on_alert(self, alert) -> None:
        sev = getattr(alert.severity, "value", str(alert.severity))
        code = getattr(alert.code, "value", str(alert.code))
        inc = Incident(alert.step, alert.onset_step, code, alert.metric, sev, alert.message,
                       str(getattr(alert, "detector", "") or ""))
        self.alerts.append(inc)
        self._say(f"[{self.tag}] ALERT    {inc.line()}")
        if sev == "critical":
            sample = latest_sample(self.samples_path)
            if sample is not None:
                self._say(f"[{self.tag}]          the policy now writes (step {sample['step']}, reward "
                          f"{sample['reward']:+.2f}): {sample['prompt']!r} -> {sample['response'][:120]!r}")

    def on_decision(self, decision, phase: str, outcome) -> None:
        action = getattr(decision.action, "value", str(decision.action))
        if phase == "decided":
            self.decisions.append({**decision.to_dict(), "phase": phase})
            target = f" -> step {decision.target_step}" if decision.target_step is not None else ""
            params = _fmt_params(decision.params, self.constraints)
            self._say(f"[{self.tag}] DECIDE   step {decision.step} {action}{target}"
                      f"{' (' + params + ')' if params else ''}: {decision.reason}")
            return
        text = outcome.get("message", "") if isinstance(outcome, dict) else str(outcome or "")
        for d in reversed(self.decisions):
            if d["action"] == action and d["step"] == decision.step:
                d["phase"], d["outcome"] = phase, text
                break
        self._say(f"[{self.tag}] {phase.upper():<8} {action}{': ' + text if text else ''}")

    def on_checkpoint(self, step: int, path: str, health: str) -> None:
        if health in ("healthy", "suspect", "corrupt"):  # "pending" and "pruned" are routine
            self._say(f"[{self.tag}] CKPT     step {step} {health}")

    def on_state(self, state: str) -> None:
        if state not in ("running", "init", "starting"):
            self._say(f"[{self.tag}] STATE    {state}")

    def on_restart(self, reason: str) -> None:
        self._say(f"[{self.tag}] RESTART  {reason}")

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ for the summary
    def rollbacks_done(self) -> int:
        return sum(1 for d in self.decisions if d["action"] == "rollback" and d.get("phase") == "done")

    def first_critical(self) -> Incident | None:
        """The first critical alert; of several at that step, the one with the earliest onset (the
        one the policy engine lets lead the rollback)."""
        crit = [a for a in self.alerts if a.severity == "critical"]
        return min(crit, key=lambda a: (a.step, a.onset_step)) if crit else None


@dataclass
class StepNarrator:
    """`on_step(step, metrics)` callback for the unguarded twin (ppo.cli.run_training). With
    `rules` (the guardrail bounds) it says once when the run crosses them with nobody watching."""

    tag: str = "unguarded"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    rules: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    collapse_step: int | None = None

    def __call__(self, step: int, metrics: dict) -> None:
        from rlguard.orchestrator.demo.spec import collapse_step

        print(step_line(self.tag, step, metrics), file=self.out, flush=True)
        self.events.append({"step": step, "metrics": metrics})
        if self.rules and self.collapse_step is None:
            self.collapse_step = collapse_step(self.events, self.rules)
            if self.collapse_step is not None:
                print(f"[{self.tag}] COLLAPSE the guardrail bounds are crossed since step {self.collapse_step}; "
                      "nobody is watching this run, it trains on", file=self.out, flush=True)
