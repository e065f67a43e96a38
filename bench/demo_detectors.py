"""Does the demo's collapse get caught without the hand-set KL budget? (issue #17)

    # live: the whole demo with the KL budget and distinct_2 floor removed (`rlguard demo --no-kl-budget`)
    .venv/bin/python bench/demo_detectors.py --out /tmp/demo-nokl [--compare] [-- EXTRA DEMO ARGS]
    # offline: recorded metrics streams through the same monitors, with and without the budget
    .venv/bin/python bench/demo_detectors.py --replay RUN/unguarded/metrics.jsonl [MORE.jsonl ...]

Live: runs the demo (the twin only with --compare) under `detectors_only_monitors()` (orchestrator/demo/spec.py)
and prints the figures of bench/demo_timing.py (which detector fired first, at which step, the
rollbacks, the gold results, the goals). Offline: the first critical alert of each stream under
the shipped detector settings, under the demo's monitors without the guardrails (the shipped
detectors with the demo's own settings: spec.DEMO_MONITORS) and with them, each with detector, code, metric and numbers, next to
the step at which the guardrails would call the stream collapsed. Replaying an unguarded stream
says when a guarded run on the same seed would first be alerted: up to that alert the two
trajectories are the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_critical(events, monitors: dict):
    from rlguard.monitors.config import monitor_config_from_dict
    from rlguard.monitors.stack import MonitorStack

    stack = MonitorStack(monitor_config_from_dict(monitors, "demo monitors"))
    alerts = []
    for ev in events:
        alerts += [a for a in stack.update(ev) if getattr(a.severity, "value", a.severity) == "critical"]
    # of several at one step, the earliest onset first: the one the policy engine lets lead the rollback
    return sorted(alerts, key=lambda a: (a.step, a.onset_step))


def replay_rows(path: Path) -> list[str]:
    from rlguard.orchestrator.demo.spec import DEMO_MONITORS, collapse_step, detectors_only_monitors
    from rlguard.orchestrator.replay_cli import read_trace

    _, events, _ = read_trace(path, None)
    raw = [{"step": e.step, "metrics": e.metrics} for e in events]
    rows = []
    library = {k: v for k, v in detectors_only_monitors().items() if k != "patterns"}  # shipped detector settings
    for name, monitors in (("detectors only, library settings", library),
                           ("detectors only, the demo's settings", detectors_only_monitors()),
                           ("the demo's settings with the KL budget", DEMO_MONITORS)):
        crit = first_critical(events, monitors)
        if crit:
            a = crit[0]
            what = (f"step {a.step} (onset {a.onset_step}): detector {a.detector}, code "
                    f"{getattr(a.code, 'value', a.code)}, metric {a.metric}: {a.message}")
        else:
            what = f"no critical alert in {len(events)} steps"
        rows.append(f"| {path} | {name} | {what} |")
    rows.append(f"| {path} | guardrails' collapse step (2 steps out of bounds) | "
                f"{collapse_step(raw)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="live: demo output directory (must not hold a run)")
    p.add_argument("--replay", nargs="+", metavar="METRICS_JSONL", help="offline: recorded streams")
    p.add_argument("--compare", action="store_true", help="live: also run the unguarded twin")
    p.add_argument("extra", nargs="*", help="more `rlguard demo` arguments (after --)")
    args = p.parse_args(argv)
    if args.replay:
        print("| stream | monitors | first critical alert |\n|---|---|---|")
        for path in args.replay:
            print("\n".join(replay_rows(Path(path))))
        return 0
    if not args.out:
        p.error("--out or --replay is required")
    sys.path.insert(0, str(REPO / "bench"))
    from demo_timing import figures

    cmd = [sys.executable, "-m", "rlguard.orchestrator.cli", "demo", "--no-serve", "--no-kl-budget",
           "--out", args.out, *(["--compare"] if args.compare else []), *args.extra]
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    wall = time.monotonic() - t0
    summary_path = Path(args.out) / "demo_summary.json"
    if not summary_path.is_file():
        print(f"demo exited {rc} without a summary", file=sys.stderr)
        return 1
    print(f"\ncommand: {' '.join(cmd)}   (exit {rc}; load average {os.getloadavg()[0]:.1f})\n")
    print(figures(json.loads(summary_path.read_text()), wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
