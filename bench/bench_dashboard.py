"""Figures for the live dashboard's history and the run report at 100,000 steps.

    .venv/bin/python bench/bench_dashboard.py [--steps 100000] [--metrics 15]

Prints: RunHistory ingest cost per event, its memory, /api/history build time and payload
(raw and gzip) at max_points=800, one downsample, and `rlguard report` wall time on a run
directory of that size with two rollbacks. One thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlguard.dashboards.history import RunHistory  # noqa: E402
from rlguard.dashboards.report import write_report  # noqa: E402
from rlguard.dashboards.web.app import _dumps  # noqa: E402
from rlguard.monitors.events import MetricEvent  # noqa: E402

NAMES = ["reward", "kl", "perplexity", "response_length", "entropy", "truncated_fraction", "distinct_2",
         "reward_std", "policy_loss", "value_loss", "clipfrac", "grad_norm", "kl_coef", "clip_range", "lr",
         "approx_kl", "ref_perplexity", "kl_seq", "step_seconds", "tokens_per_second"]


def events(steps: int, metrics: int):
    """A run with two rollbacks: steps 0..0.6N, back to 0.5N, on to 0.8N, back to 0.7N, on to N."""
    names = NAMES[:metrics]
    plan = [(0, int(0.6 * steps)), (int(0.5 * steps), int(0.8 * steps)), (int(0.7 * steps), steps)]
    t = 1.7e9
    for attempt, (a, b) in enumerate(plan):
        for s in range(a, b):
            t += 1.0
            yield MetricEvent(step=s, time=t, attempt=attempt,
                              metrics={n: math.sin(s / 300 + i) + 0.01 * attempt for i, n in enumerate(names)})


def timed(fn, repeat: int = 3):
    best = math.inf
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--metrics", type=int, default=15)
    ap.add_argument("--max-points", type=int, default=800)
    args = ap.parse_args()
    evs = list(events(args.steps, args.metrics))

    h = RunHistory()
    t0 = time.perf_counter()
    for e in evs:
        h.on_event(e)
    ingest = time.perf_counter() - t0
    tracemalloc.start()  # a second pass for memory: tracing slows the first one down ~4x
    h = RunHistory()
    for e in evs:
        h.on_event(e)
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    snap_s, snap = timed(lambda: h.snapshot(args.max_points))
    body = _dumps(snap).encode()
    gz = gzip.compress(body, compresslevel=5)
    ds_s, _ = timed(lambda: h.downsample("kl", args.max_points))

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        with open(run / "metrics.jsonl", "w") as f:
            for e in evs:
                f.write(e.to_json() + "\n")
        with open(run / "journal.jsonl", "w") as f:
            for i, (step, target) in enumerate([(int(0.6 * args.steps) - 1, int(0.5 * args.steps) - 1),
                                                (int(0.8 * args.steps) - 1, int(0.7 * args.steps) - 1)]):
                d = {"action": "rollback", "step": step, "reason": "bench", "target_step": target, "params": {}}
                f.write(json.dumps({"seq": 2 * i + 1, "time": 1.7e9 + step + 0.5, "kind": "decision",
                                    "phase": "decided", "decision_id": f"d-{i}", "decision": d}) + "\n")
        report_s, _ = timed(lambda: write_report(run), repeat=1)
        report_bytes = (run / "report.html").stat().st_size

    n = len(evs)
    print(f"## Live dashboard history and run report ({args.steps:,} steps, {n:,} events incl. 2 rollbacks, "
          f"{args.metrics} metrics)\n")
    print("| figure | value |\n|---|---|")
    print(f"| RunHistory.on_event | {ingest / n * 1e6:.1f} µs per event ({ingest:.2f} s total) |")
    print(f"| RunHistory memory | {mem / 2**20:.1f} MiB ({mem / (n * args.metrics):.1f} B per value) |")
    print(f"| /api/history build (snapshot, max_points={args.max_points}) | {snap_s * 1e3:.0f} ms |")
    print(f"| /api/history payload | {len(body) / 1024:.0f} KiB raw, {len(gz) / 1024:.0f} KiB gzip |")
    print(f"| one metric downsample ({n:,} -> <= {args.max_points} points) | {ds_s * 1e3:.1f} ms |")
    print(f"| rlguard report (read + plot + write) | {report_s:.1f} s, {report_bytes / 1024:.0f} KiB html |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
