"""Time `rlguard demo` end to end and print its figures as a markdown table.

    .venv/bin/python bench/demo_timing.py --out /tmp/demo-bench [--compare] [--cold] [-- EXTRA DEMO ARGS]
    .venv/bin/python bench/demo_timing.py --summary /tmp/demo-bench/demo_summary.json   # figures of a past run

--cold also times the bundled model's conversion into an empty cache (RLGUARD_CACHE=<tmp dir>),
in a separate process, before the demo (which then uses the warm default cache).
Figures: steps to collapse unguarded, detection delay, rollbacks, final gold metrics guarded vs
unguarded, wall time per phase and in total (including the process start).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def time_cold_conversion() -> float:
    with tempfile.TemporaryDirectory(prefix="rlguard-cold-") as cache:
        env = dict(os.environ, RLGUARD_CACHE=cache)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "from rlguard.ppo.bundled import bundled_model_dir; bundled_model_dir()"],
                       cwd=REPO, env=env, check=True)
        return time.monotonic() - t0


def figures(summary: dict, process_wall_s: float | None = None, cold_s: float | None = None) -> str:
    g, u, gold = summary["guarded"], summary.get("unguarded"), summary["gold"]
    t = summary["trainer"]
    rows = [
        ("model / reward", f"{summary['model']} / {summary['reward']}"),
        ("settings", f"preset {t['preset']}, lr {t['lr']}, kl_coef {t['kl_coef']}, batch {t['batch_size']}, "
                     f"minibatch {t['minibatch_size']}, {t['max_new_tokens']} tokens, {t['steps']} steps, "
                     f"temperature {t['temperature']}, use_lora {t.get('use_lora', False)}"),
        ("guarded end state", f"{g['state']} ({g['reason']})"),
        ("rollbacks (guarded)", str(g["rollbacks"])),
        ("first critical alert (guarded)", f"step {g['first_critical_step']}, onset {g['first_critical_onset']}"
         + (f": detector {g['first_critical']['detector']}, code {g['first_critical']['code']}, metric "
            f"{g['first_critical']['metric']}: {g['first_critical']['message']}" if g.get("first_critical") else "")),
        ("critical alerts (guarded)", "; ".join(f"step {a['step']} {a.get('detector', '?')}/{a['code']}/{a['metric']}"
                                                for a in g["alerts"] if a["severity"] == "critical") or "none"),
        ("KL budget rule", "on" if summary.get("kl_budget_rule", True) else "off (--no-kl-budget)"),
        ("detection delay", f"{g['detection_delay_steps']} steps"),
        ("final constraints (guarded)", json.dumps(g["final_constraints"])),
        ("guarded collapsed at end", str(g["collapsed_at_end"])),
    ]
    if u:
        rows += [("steps to collapse, unguarded", str(u["collapse_step"])),
                 ("unguarded collapsed at end", str(u["collapsed_at_end"]))]
    for key in ("gold_ref_perplexity", "gold_distinct_2", "gold_degenerate", "gold_truncated", "gold_sentiment"):
        vals = [f"{name} {gold[name]['metrics'][key]:.3f}" for name in ("start", "guarded", "unguarded") if name in gold]
        rows.append((key, ", ".join(vals)))
    rows.append((f"flagged held-out answers (of {gold.get('prompts', '?')})", ", ".join(
        f"{name} {sum(1 for x in gold[name]['samples'] if x.get('degenerate'))}"
        for name in ("start", "guarded", "unguarded") if name in gold)))
    for name, goal in summary.get("goals", {}).items():
        rows.append((f"goal: {name}", f"{goal['value']} (target {goal['target']}): "
                                      f"{'met' if goal['met'] else 'NOT met'}"))
    rows += [(f"wall: {k}", f"{v:.0f} s") for k, v in summary["wall_s"].items()]
    if process_wall_s is not None:
        rows.append(("wall: whole command (process start to exit)", f"{process_wall_s:.0f} s"))
    if cold_s is not None:
        rows.append(("cold model conversion (empty RLGUARD_CACHE)", f"{cold_s:.0f} s"))
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="demo output directory (must not hold a run)")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--cold", action="store_true", help="also time the model conversion with an empty cache")
    p.add_argument("--summary", help="only print the figures of an existing demo_summary.json")
    p.add_argument("extra", nargs="*", help="more `rlguard demo` arguments (after --)")
    args = p.parse_args(argv)
    if args.summary:
        print(figures(json.loads(Path(args.summary).read_text())))
        return 0
    if not args.out:
        p.error("--out is required (or --summary)")
    cold = time_cold_conversion() if args.cold else None
    cmd = [sys.executable, "-m", "rlguard.orchestrator.cli", "demo", "--no-serve", "--out", args.out, *args.extra]
    if args.compare:
        cmd.append("--compare")
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    wall = time.monotonic() - t0
    summary_path = Path(args.out) / "demo_summary.json"
    if not summary_path.is_file():
        print(f"demo exited {rc} without a summary", file=sys.stderr)
        return 1
    print(f"\ncommand: {' '.join(cmd)}   (exit {rc}; load average {os.getloadavg()[0]:.1f})\n")
    print(figures(json.loads(summary_path.read_text()), wall, cold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
