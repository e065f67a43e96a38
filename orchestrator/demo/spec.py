"""The demo's run spec: settings under which a real policy hacks its reward, and the guardrails.

Everything here was chosen by measurement (bench/notes/demo.md, the issue #17 section).

Trainer: preset vanilla (no reward normalisation or clipping, no grad clip), lr 5e-4,
temperature 1.0 and a small KL coefficient. With the sentiment reward, SmolLM2-135M then
strings upbeat words together within a few steps: kl 0 -> 0.37 -> 0.87 -> 0.99 -> 1.51 -> 1.60,
distinct_2 0.96 -> 0.33 by step 6 ("I'm fine. I'm fine. I'm fine."). At 3e-4 (the earlier
setting) the same run drifts too slowly for 12 steps: no detector fires before step 11 and the
checkpoint 2 steps before that already sits at kl 0.97. The KL coefficient starts small but
NOT at zero: tightening multiplies it, and 0 x 4 = 0. The critic is a value head on the
policy's backbone: a step takes ~7 s on an idle machine instead of ~10, a checkpoint 1.6 GB
instead of 3.

Monitors: the shipped detectors with their defaults. The statistical detectors need 30 steps of
warm-up, longer than the demo; the early-life pattern detector (monitors/early.py) judges from
step 4 against a reference of the first 2 steps (the library default since issue #17: with 3 it
held this collapse's own start and never fired; the whole-corpus figures are in BENCHMARKS.md). On top, the
guardrails a team sets for a short job: a KL budget and a diversity floor (critical, 2 steps of
patience). `detectors_only_monitors()` drops them (`rlguard demo --no-kl-budget`).

Policies: a critical alert rolls back to the newest healthy checkpoint before the earliest
onset minus 1 step and tightens: lr x0.1 (5e-4 -> 5e-5), kl_coef x2, clip_range x0.8.
Measured (bench/notes/demo.md): the pattern detector dates the onset to step 3, so a 2-step
margin asked for a checkpoint before step 1 and halted; with kl_coef x20 the run turned to
gibberish within 3 steps of the rollback (perplexity 22 -> 390, halted); with x4 it drifted that
way (9 of 48 held-out answers flagged, reference perplexity x5.7). In vanilla PPO the KL penalty
is a per-token reward that can favour unlikely tokens: more of it is not safer; the learning
rate is the knob that holds. lr x0.2 left the run drifting back toward the collapse it was
rolled back from on 4 of the 5 runs measured (seed 0 on the earlier machine: reference
perplexity x1.34; seeds 0 and 1 on a later one: KL over the 1.0 budget in the last 5 steps,
held-out distinct_2 down to 0.51-0.63; seed 3: 1 of 48 answers flagged); x0.1 ended seeds 0-3
on the later machine clean on all four guarded goals (session 7 table in bench/notes/demo.md). A rollback budget of 3 then halts.
"""

from __future__ import annotations

import copy

DEMO_TRAINER: dict = {
    "preset": "vanilla",
    "critic": "shared_backbone",  # see the module docstring
    "model": "bundled",
    "reward": "sentiment",
    "steps": 12,  # measured: one rollback at step 6, then 11 steps to a clean end (bench/notes/demo.md)
    "seed": 0,
    "batch_size": 8,
    "minibatch_size": 4,
    "max_new_tokens": 32,
    "temperature": 1.0,
    "top_p": 0.9,
    "lr": 5e-4,  # measured (bench/notes/demo.md, issue #17): at 3e-4 the collapse is too slow for 12 steps
    "kl_coef": 0.005,
    "checkpoint_every": 1,  # the collapse starts at step 3-4: a target must exist before it
    "eval_every": 0,        # the demo measures gold metrics itself, after the run (demo_gold.py)
    "keep_samples": 32,
    "device": "cpu",
    "torch_threads": 2,
}

# The guardrails: on the measured collapse (lr 5e-4) KL passes 1.0 and distinct_2 falls under 0.6
# at step 4-5; they fire at step 6, the same step as the pattern detector, whose earlier onset
# (step 3) leads the rollback. After it, the guarded run stays at kl 0.3-0.8, distinct_2 0.8-0.9.
KL_BUDGET = 1.0
DISTINCT_2_FLOOR = 0.6
BOUND_PATIENCE = 2

DEMO_MONITORS: dict = {
    "bounds": {"rules": [
        {"metric": "kl", "upper": KL_BUDGET, "patience_steps": BOUND_PATIENCE, "severity": "critical"},
        {"metric": "distinct_2", "lower": DISTINCT_2_FLOOR, "patience_steps": BOUND_PATIENCE,
         "severity": "critical"},
        # the defaults, kept: a run that starts truncating every answer is a warning sign too
        {"metric": "truncated_fraction", "upper": 0.9, "patience_steps": 5, "severity": "warning",
         "only_if_established_inside": True},
    ]},
    # A SmolLM2 step on 2 busy shared cores can take minutes: only a long silence is a stall.
    "stall": {"min_s": 900.0},
}

DEMO_POLICIES: dict = {
    # measured (issue #17 runs): after the rollback kl_coef x20 drove vanilla PPO into gibberish within
    # 3 steps, x4 drifted toward it, x2 stayed fluent; the learning rate is the knob that holds:
    # x0.2 missed a guarded goal on 4 of 5 runs measured, x0.1 met them on seeds 0-3.
    "tighten": {"kl_coef": {"factor": 2.0, "min": 0.0, "max": 2.0},
                "lr": {"factor": 0.1, "min": 1e-7, "max": 1.0}},
    "rollback": {"budget": 3, "margin_steps": 1},  # margin 2 halted: see the module docstring
    "cooldown": {"steps": 4},
}

DEMO_SUPERVISOR: dict = {
    # SmolLM2 on 2 shared cores: a step can take minutes when the machine is busy.
    "step_timeout_s": 1800.0,
    "heartbeat_timeout_s": 120.0,
    "startup_timeout_s": 900.0,
    "sync_wait_s": 30.0,
    "tick_s": 0.1,
    # Full fine-tuning checkpoints of SmolLM2 hold the policy, its AdamW state and the value
    # head (1.6 GB): keep few, but 3 healthy ones so that the target 2 steps before an onset
    # is still on disk.
    # A checkpoint is a rollback target after 1 step without a CRITICAL alert. Measured on SmolLM2
    # (bench/notes/demo.md, an earlier configuration): the KL bound fired at step 5 with onset 4,
    # and an alert demotes every checkpoint with step + confirm_steps >= its onset; with
    # confirm_steps 2 and a checkpoint every 2 steps that left no target and the run halted.
    # Early warnings must not either.
    # keep_healthy 6: the pattern detector dates the onset to step 3 and the alert comes at step 6;
    # the target (onset - margin = step 1) must still be on disk then.
    "checkpoints": {"confirm_steps": 1, "keep_last": 2, "keep_healthy": 6, "suspect_min_severity": "critical"},
}


def detectors_only_monitors() -> dict:
    """DEMO_MONITORS without the hand-set critical guardrails (the KL budget and the distinct_2
    floor): what the shipped statistical and pattern detectors catch on their own
    (`rlguard demo --no-kl-budget`, bench/demo_detectors.py)."""
    out = copy.deepcopy(DEMO_MONITORS)
    out["bounds"]["rules"] = [r for r in out["bounds"]["rules"] if r.get("severity") != "critical"]
    return out


def apply_overrides(trainer: dict, overrides: list[str]) -> dict:
    """`key=value` trainer overrides (values parsed as YAML scalars); validated later by TrainConfig."""
    import yaml

    out = dict(trainer)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is not key=value (e.g. --set lr=1e-4)")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def train_config(trainer: dict):
    """The TrainConfig of a demo trainer mapping (the run config's `trainer:` section)."""
    import json

    from rlguard.ppo.config import load_train_config

    return load_train_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                    for k, v in trainer.items()])


def demo_run_config(*, model: str = "bundled", steps: int | None = None, reward: str | None = None,
                    overrides: list[str] | None = None, monitors: dict | None = None,
                    policies: dict | None = None, supervisor: dict | None = None) -> dict:
    """The raw run config (trainer/monitors/policies/supervisor) of the guarded demo run."""
    trainer = dict(DEMO_TRAINER, model=model)
    if steps is not None:
        trainer["steps"] = steps
    if reward is not None:
        trainer["reward"] = reward
    trainer = apply_overrides(trainer, overrides or [])
    return {
        "trainer": trainer,
        "monitors": copy.deepcopy(monitors if monitors is not None else DEMO_MONITORS),
        "policies": copy.deepcopy(policies if policies is not None else DEMO_POLICIES),
        "supervisor": dict(DEMO_SUPERVISOR, **(supervisor or {})),
    }


def collapse_step(events: list[dict], rules: list[dict] | None = None) -> int | None:
    """First step of the first streak of `patience_steps` out-of-bound steps of any critical rule
    (the same judgement the guardrail makes, applied to a run nobody guarded)."""
    rules = rules if rules is not None else DEMO_MONITORS["bounds"]["rules"]
    best = None
    for rule in rules:
        if rule.get("severity") != "critical":
            continue
        streak_start, streak = None, 0
        for e in events:
            v = e["metrics"].get(rule["metric"])
            out = v is not None and ((rule.get("upper") is not None and v > rule["upper"])
                                     or (rule.get("lower") is not None and v < rule["lower"]))
            if out:
                streak_start = e["step"] if streak == 0 else streak_start
                streak += 1
                if streak >= rule.get("patience_steps", 3):
                    best = streak_start if best is None else min(best, streak_start)
                    break
            else:
                streak = 0
    return best
