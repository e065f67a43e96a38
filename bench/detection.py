"""Detection benchmark: rlguard's default monitor stack vs the baselines a user would otherwise have.

    .venv/bin/python bench/detection.py            # full: ~300k synthetic steps, a few minutes
    .venv/bin/python bench/detection.py --quick    # smaller, for a quick look

Per failure family: detection rate (a critical alert at or after onset), median / p95 delay
after onset, onset-estimate error; per healthy family: false alarms per 10,000 steps by
severity. Baselines: a reward-only threshold, a Lightning-EarlyStopping-style patience rule on
reward (with its check_finite), and river's ADWIN / PageHinkley / KSWIN on each core metric.
Also: the ten real benign traces of ../shared/data/real-traces (no critical alarm expected),
the recorded PPO runs in bench/fixtures/ when present, and throughput of the default stack
(metric values per second, one core). Prints markdown.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.scenarios import FAILURES, HEALTHY, Scenario, generate  # noqa: E402
from monitors.events import event_from_dict  # noqa: E402
from monitors.reader import EventReader  # noqa: E402
from monitors.stack import MonitorStack  # noqa: E402

CORE = ("reward", "kl", "perplexity", "response_length")
REARM = 10  # baselines: repeated alarms on one metric within this many steps are one alarm


def shared_dir() -> Path | None:
    env = os.environ.get("RLGUARD_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if cand.is_dir():
            return cand
    return None


def shifted_collapse_table() -> None:
    """The real collapse started after k healthy-looking steps (the PPO-max fixture's first k)."""
    fx = REPO / "bench" / "fixtures"
    if not (fx / "hacking_vanilla_collapse.jsonl").is_file():
        return
    from monitors.events import MetricEvent

    healthy = list(EventReader(fx / "hacking_ppo_max.jsonl"))
    collapse = list(EventReader(fx / "hacking_vanilla_collapse.jsonl"))
    print("### The real collapse after k healthy steps (collapse starts at step k+1)\n")
    print("| k | first critical | delay after k+1 | onset |")
    print("|---|---|---|---|")
    for k in (0, 4, 10, 16, 20, 24):
        events = [MetricEvent(step=i + 1, metrics=e.metrics) for i, e in enumerate(healthy[:k] + collapse)]
        crit = [a for a in run_rlguard(events) if a[1] == "critical"]
        if crit:
            print(f"| {k} | step {crit[0][0]} {crit[0][2]} | {crit[0][0] - k - 1} | {crit[0][3]} |")
        else:
            print(f"| {k} | none | - | - |")
    print()


# -- the detectors under test: each returns [(step, severity)] alarms for one scenario -----------

def run_rlguard(events) -> list[tuple[int, str, str, int]]:
    stack = MonitorStack()
    out = []
    for ev in events:
        for a in stack.update(ev):
            out.append((a.step, a.severity.value, a.code, a.onset_step))
    return out


def run_reward_threshold(events) -> list[tuple[int, str]]:
    """What many teams run: alarm when the 10-step mean reward falls 3 sigma below its best so far
    (sigma from the first 50 steps), or reward is not finite."""
    vals, best, out, last = [], -math.inf, [], -10**9
    sigma = None
    for ev in events:
        r = ev.metrics.get("reward")
        if r is None:
            continue
        if not math.isfinite(r):
            if ev.step - last >= REARM:
                out.append((ev.step, "alarm"))
            last = ev.step
            continue
        vals.append(r)
        if len(vals) == 50:
            sigma = statistics.pstdev(vals) or 1e-12
        if sigma is None:
            continue
        m = sum(vals[-10:]) / 10
        best = max(best, m)
        if m < best - 3 * sigma:
            if ev.step - last >= REARM:
                out.append((ev.step, "alarm"))
            last = ev.step
    return out


def run_early_stopping(events, patience: int = 50) -> list[tuple[int, str]]:
    """Lightning EarlyStopping(monitor="reward", mode="max", patience=50, check_finite=True)."""
    best, wait = -math.inf, 0
    for ev in events:
        r = ev.metrics.get("reward")
        if r is None:
            continue
        if not math.isfinite(r):
            return [(ev.step, "alarm")]
        if r > best:
            best, wait = r, 0
        else:
            wait += 1
            if wait >= patience:
                return [(ev.step, "alarm")]  # it stops the run: one alarm at most
    return []


def run_river(events, kind: str) -> list[tuple[int, str]]:
    from river import drift

    make = {"ADWIN": drift.ADWIN, "PageHinkley": drift.PageHinkley, "KSWIN": lambda: drift.KSWIN(seed=0)}[kind]
    dets = {m: make() for m in CORE}
    last = dict.fromkeys(CORE, -(10**9))
    out = []
    for ev in events:
        for m in CORE:
            v = ev.metrics.get(m)
            if v is None or not math.isfinite(v):
                continue  # river's detectors take finite floats only
            d = dets[m]
            d.update(v)
            if d.drift_detected:
                if ev.step - last[m] >= REARM:
                    out.append((ev.step, "alarm"))
                last[m] = ev.step
    return out


BASELINES = {  # key: (label, detector)
    "threshold": ("reward threshold", run_reward_threshold),
    "early_stopping": ("EarlyStopping(reward)", run_early_stopping),
    "adwin": ("river ADWIN", lambda ev: run_river(ev, "ADWIN")),
    "page_hinkley": ("river PageHinkley", lambda ev: run_river(ev, "PageHinkley")),
    "kswin": ("river KSWIN", lambda ev: run_river(ev, "KSWIN")),
}


# -- scoring ---------------------------------------------------------------------------------------

class Score:
    def __init__(self):
        self.n = 0
        self.detected = 0
        self.delays: list[int] = []
        self.onset_err: list[int] = []
        self.healthy_steps = 0
        self.fa = defaultdict(int)  # severity -> count
        self.fa_codes = defaultdict(int)

    def add(self, sc: Scenario, alarms, critical_only: bool):
        self.n += 1
        onset = sc.onset
        healthy_until = len(sc.events) if onset is None else onset - 1
        self.healthy_steps += healthy_until
        hit = None
        for a in alarms:
            step, sev = a[0], a[1]
            if step <= healthy_until:
                self.fa[sev] += 1
                if len(a) > 2:
                    self.fa_codes[f"{sev} {a[2]}"] += 1
            elif hit is None and (sev != "warning" or not critical_only):
                hit = a
        if onset is not None and hit is not None:
            self.detected += 1
            self.delays.append(hit[0] - onset)
            if len(hit) > 3:
                self.onset_err.append(hit[3] - onset)

    def per10k(self, sev: str) -> float:
        return 1e4 * self.fa[sev] / max(self.healthy_steps, 1)


def pct(v: list[int], q: float) -> str:
    if not v:
        return "-"
    s = sorted(v)
    return f"{s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer seeds (about a tenth of the work)")
    p.add_argument("--seeds", type=int, default=None, help="scenarios per family (default 30, quick 6)")
    p.add_argument("--baseline-seeds", type=int, default=None, help="scenarios per family for baselines")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--baselines", default=",".join(BASELINES), help=f"comma list of {', '.join(BASELINES)}")
    p.add_argument("--throughput-seeds", type=int, default=5, help="healthy scenarios per family timed for throughput")
    args = p.parse_args(argv)
    seeds = args.seeds or (6 if args.quick else 30)
    bseeds = args.baseline_seeds or (3 if args.quick else 10)
    t_start = time.perf_counter()

    print(f"## Detection benchmark ({seeds} scenarios x {args.steps} steps per family; baselines on {bseeds})\n")
    scen = {fam: [] for fam in FAILURES + HEALTHY}
    for sc in generate(FAILURES + HEALTHY, seeds, args.steps):
        sc.parsed = [event_from_dict(e) for e in sc.events]
        scen[sc.family].append(sc)

    # rlguard
    ours: dict[str, Score] = {}
    n_values, t_det = 0, 0.0
    for fam, lst in scen.items():
        ours[fam] = sc_score = Score()
        for sc in lst:
            t0 = time.perf_counter()
            alarms = run_rlguard(sc.parsed)
            t_det += time.perf_counter() - t0
            n_values += sum(len(e.metrics) for e in sc.parsed)
            sc_score.add(sc, alarms, critical_only=True)

    print("### rlguard default profile: failure families (detection = a critical alert at/after onset)\n")
    print("| family | detected | median delay | p95 delay | median onset error | pre-onset FA crit | pre-onset FA warn |")
    print("|---|---|---|---|---|---|---|")
    all_delays = []
    for fam in FAILURES:
        s = ours[fam]
        all_delays += s.delays
        print(f"| {fam} | {s.detected}/{s.n} | {pct(s.delays, .5)} | {pct(s.delays, .95)} | {pct(s.onset_err, .5)} "
              f"| {s.fa['critical']} | {s.fa['warning']} |")
    print(f"| **all** | {sum(ours[f].detected for f in FAILURES)}/{sum(ours[f].n for f in FAILURES)} "
          f"| {pct(all_delays, .5)} | {pct(all_delays, .95)} | | | |\n")

    print("### rlguard default profile: healthy families (false alarms per 10,000 steps)\n")
    print("| family | steps | critical /10k | warning /10k | most frequent warnings |")
    print("|---|---|---|---|---|")
    tot = Score()
    for fam in HEALTHY + FAILURES:
        s = ours[fam]
        tot.healthy_steps += s.healthy_steps
        for k, v in s.fa.items():
            tot.fa[k] += v
        if fam in HEALTHY:
            top = ", ".join(f"{k.split(' ', 1)[1]} {v}" for k, v in sorted(s.fa_codes.items(), key=lambda kv: -kv[1])[:3])
            print(f"| {fam} | {s.healthy_steps} | {s.per10k('critical'):.2f} | {s.per10k('warning'):.1f} | {top} |")
    print(f"| **all healthy steps (incl. pre-onset)** | {tot.healthy_steps} | {tot.per10k('critical'):.2f} "
          f"| {tot.per10k('warning'):.1f} | |\n")

    # baselines
    print("### Baselines (same scenarios, first seeds)\n")
    print("| detector | collapse detected | median delay | p95 delay | FA /10k healthy steps |")
    print("|---|---|---|---|---|")
    for key in args.baselines.split(","):
        if not key:
            continue
        name, fn = BASELINES[key]
        fail, healthy = Score(), Score()
        for lst in scen.values():
            for sc in lst[:bseeds]:
                (fail if sc.onset is not None else healthy).add(sc, fn(sc.parsed), critical_only=False)
        h_steps = healthy.healthy_steps + fail.healthy_steps
        fa = sum(healthy.fa.values()) + sum(fail.fa.values())
        print(f"| {name} | {fail.detected}/{fail.n} | {pct(fail.delays, .5)} | {pct(fail.delays, .95)} "
              f"| {1e4 * fa / max(h_steps, 1):.1f} |")
    # rlguard on the same subset, for a like-for-like row
    fail, healthy = Score(), Score()
    for lst in scen.values():
        for sc in lst[:bseeds]:
            (fail if sc.onset is not None else healthy).add(sc, run_rlguard(sc.parsed), critical_only=True)
    h_steps = healthy.healthy_steps + fail.healthy_steps
    print(f"| rlguard (critical) | {fail.detected}/{fail.n} | {pct(fail.delays, .5)} | {pct(fail.delays, .95)} "
          f"| {1e4 * (healthy.fa['critical'] + fail.fa['critical']) / max(h_steps, 1):.2f} |\n")

    # real traces
    sd = shared_dir()
    traces = sorted((sd / "data" / "real-traces").glob("*[0-9].jsonl")) if sd else []
    # Every recorded SmolLM2 run (bench/hacking_experiment.py); the samples files are not metric streams.
    fixtures = sorted(f for f in (REPO / "bench" / "fixtures").glob("hacking_*.jsonl") if not f.stem.endswith("_samples"))
    real_rows = [(t, "benign") for t in traces] + [(f, "recorded PPO") for f in fixtures if f.is_file()]
    if real_rows:
        print("### Real traces\n")
        print("| trace | kind | steps | critical | warning | first critical (onset) | warnings |")
        print("|---|---|---|---|---|---|---|")
        for path, kind in real_rows:
            r = EventReader(path)
            events = list(r)
            alarms = run_rlguard(events)
            crit = [a for a in alarms if a[1] == "critical"]
            first = f"step {crit[0][0]} {crit[0][2]} ({crit[0][3]})" if crit else "-"
            warns = ", ".join(f"{a[2]}@{a[0]}" for a in alarms if a[1] != "critical") or "-"
            print(f"| {path.name} | {kind} | {len(events)} | {len(crit)} | {len(alarms) - len(crit)} | {first} "
                  f"| {warns} |")
        print()
        shifted_collapse_table()
    else:
        print("(real traces not found: set RLGUARD_SHARED or put shared/ beside the repo)\n")

    # throughput
    healthy_events = [e for fam in HEALTHY for sc in scen[fam][:args.throughput_seeds] for e in sc.parsed]
    vals = sum(len(e.metrics) for e in healthy_events)
    best_cpu = best_wall = math.inf
    for _ in range(3):
        stack = MonitorStack()
        c0, w0 = time.process_time(), time.perf_counter()
        for ev in healthy_events:
            stack.update(ev)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("### Throughput (default stack, one core, pre-parsed events)\n")
    print(f"- {vals / best_cpu:,.0f} metric values/s of process CPU time ({len(healthy_events) / best_cpu:,.0f} "
          f"events/s, {vals / len(healthy_events):.1f} metrics per event; best of 3 over {len(healthy_events)} events)")
    print(f"- {vals / best_wall:,.0f} metric values/s of wall time (load average {load:.1f} while measuring)")
    print(f"- whole scenario sweep: {n_values / t_det:,.0f} values/s")
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
