"""How trainers actually write a per-step stream: every N steps, and sometimes several records per step.

subsample: trl / transformers log at `logging_steps` = N: one record at optimizer steps N, 2N,
3N, ... whose values are the mean of the values of the steps since the last log (trl keeps a
list per metric and averages it at log time). The step numbers stay the optimizer steps, so a
collapse's onset keeps its step; a partial window at the end is not logged.

with_records: the same logged stream where each step appears as two records, as real logs do:
  - "dup": the same record twice (a logger attached twice, a resumed writer replaying a line);
  - "train_eval": the train record, then an eval record at the same step (transformers logs the
    eval metrics of a step as a separate record, keys prefixed `eval_`);
  - "split": one step split over two records (the optimizer's record with grad norm and lr,
    then the rollout metrics), as when the trainer and a callback log separately.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from bench.scenarios import Scenario

INTERVALS = (1, 5, 10)
RECORD_MODES = ("single", "dup", "train_eval", "split")
_OPTIMIZER_KEYS = frozenset({"grad_norm", "clipfrac", "approx_kl", "lr", "policy_loss", "value_loss"})


def subsample(sc: Scenario, interval: int) -> Scenario:
    """`sc` logged every `interval` steps (mean of each window; NaN in a window gives NaN)."""
    if interval < 1:
        raise ValueError(f"logging interval must be >= 1, got {interval}")
    if interval == 1:
        return replace(sc, notes={**sc.notes, "interval": 1})
    out = []
    events = sc.events
    for end in range(interval, len(events) + 1, interval):
        window = events[end - interval:end]
        names = window[-1]["metrics"].keys()
        metrics = {}
        for k in names:
            vals = [e["metrics"][k] for e in window if e["metrics"].get(k) is not None]
            metrics[k] = float(np.mean(vals)) if vals else None
        out.append({"step": window[-1]["step"], "time": window[-1]["time"], "metrics": metrics})
    return replace(sc, events=out, notes={**sc.notes, "interval": interval})


def with_records(sc: Scenario, mode: str, seed: int = 0) -> Scenario:
    """`sc` with each logged step written as two records (see the module docstring)."""
    if mode not in RECORD_MODES:
        raise ValueError(f"unknown records mode {mode!r}: expected one of {', '.join(RECORD_MODES)}")
    if mode == "single":
        return sc
    rng = np.random.default_rng(seed)
    out = []
    for e in sc.events:
        m = e["metrics"]
        if mode == "dup":
            out += [e, {"step": e["step"], "time": e["time"], "metrics": dict(m)}]
        elif mode == "train_eval":
            ev = {f"eval_{k}": (v * math.exp(0.05 * rng.standard_normal()) if v is not None else None)
                  for k, v in m.items() if k in ("reward", "response_length", "entropy", "kl")}
            out += [e, {"step": e["step"], "time": e["time"] + 1.0, "metrics": ev}]
        else:  # split
            opt = {k: v for k, v in m.items() if k in _OPTIMIZER_KEYS}
            opt["lr"] = 1e-6  # transformers logs the learning rate with the loss record
            rest = {k: v for k, v in m.items() if k not in _OPTIMIZER_KEYS}
            out += [{"step": e["step"], "time": e["time"], "metrics": opt},
                    {"step": e["step"], "time": e["time"], "metrics": rest}]
    return replace(sc, events=out, notes={**sc.notes, "records": mode})
