"""Detection benchmark: rlguard's default monitor stack on labelled streams, and the baselines.

    .venv/bin/python bench/detection.py                     # full: ~10 min on one core
    .venv/bin/python bench/detection.py --quick             # under ~2 min
    .venv/bin/python bench/detection.py --json after.json --compare bench/results/detection_before.json

Sources: synthetic-old (bench/scenarios.py, the PPO paper's families, our full metric set),
synthetic-real (bench/scenarios_real.py, issue 13's classes of real trl / verl runs, each
metric subset those trainers log), and the labelled real runs of bench/fixtures/corpus/ours and
/public (label.json + metrics.jsonl; an empty or missing folder gives none). Every synthetic
stream is logged at intervals 1, 5 and 10 (bench/sparse_logging.py: the mean of each window, at
the optimizer step that ends it), and a few seeds also with several records per step.

Detection: a critical alert at or after the onset; a critical before it, or in a healthy
stream, is a false alarm. Printed: issue 13's goals with PASS / FAIL beside the measured
figures, then rates, delays (optimizer steps and logged points) and false alarms (per healthy
run, per 100,000 healthy steps) per source x interval, per family x interval, per metric
subset x interval, per records mode, and per corpus run. --json writes every stream's result;
--compare OLD.json prints what changed against an earlier run (newly detected, newly missed,
new false alarms); --sources / --families / --subsets narrow a run. Then, as before:
baselines (a reward threshold, Lightning-EarlyStopping on reward, river's ADWIN / PageHinkley /
KSWIN) on the old families, the unlabelled real traces
(../shared/data/real-traces, bench/fixtures/hacking_*), and the stack's throughput.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from itertools import chain
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.corpus_runs import load_corpus  # noqa: E402
from bench.detection_report import goals, tables  # noqa: E402
from bench.detection_score import StreamResult, compare, load_json, score, write_json  # noqa: E402
from bench.scenarios import FAILURES, HEALTHY, Scenario, generate  # noqa: E402
from bench.scenarios_real import REAL_FAILURES, REAL_FAMILIES, REAL_HEALTHY, SUBSETS, generate_real  # noqa: E402
from bench.sparse_logging import RECORD_MODES, subsample, with_records  # noqa: E402
from rlguard.monitors.events import event_from_dict  # noqa: E402
from rlguard.monitors.stack import MonitorStack  # noqa: E402
from rlguard.orchestrator.event_reader import EventReader  # noqa: E402

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
    from rlguard.monitors.events import MetricEvent

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


def synthetic_results(args, log) -> tuple[list[StreamResult], dict]:
    """Score every synthetic stream: the old families (each at every interval) and the real-run
    families (each subset, interval and seed; the first seeds also as several records per step).
    Returns the results and the old families' per-step scenarios (for baselines and throughput)."""
    results: list[StreamResult] = []
    scen: dict[str, list[Scenario]] = {fam: [] for fam in FAILURES + HEALTHY}
    old_fams = [f for f in FAILURES + HEALTHY if args.families is None or f in args.families]
    for sc in generate(old_fams if "synthetic-old" in args.sources else [], args.seeds, args.steps):
        sc.parsed = [event_from_dict(e) for e in sc.events]
        scen[sc.family].append(sc)
        for iv in args.intervals:
            sub = sc if iv == 1 else subsample(sc, iv)
            events = sc.parsed if iv == 1 else [event_from_dict(e) for e in sub.events]
            results.append(score(events, id=f"synthetic-old/{sc.family}/i{iv}/s{sc.seed}", source="synthetic-old",
                                 family=sc.family, subset="ppo_old", interval=iv, records="single", onset=sc.onset))
    log(f"synthetic-old: {len(results)} streams")
    n0 = len(results)
    # More healthy seeds than collapse seeds: the false-alarm goal needs >= 100,000 healthy steps per subset.
    def pick(fams):
        return [f for f in fams if "synthetic-real" in args.sources and (args.families is None or f in args.families)]

    subsets = args.subsets or list(SUBSETS)
    streams = chain(generate_real(pick(REAL_FAILURES), subsets, args.intervals, args.real_seeds),
                    generate_real(pick(REAL_HEALTHY), subsets, args.intervals, args.healthy_seeds))
    for sc in streams:
        iv, sub = sc.notes["interval"], sc.notes["subset"]
        logged = subsample(sc, iv)
        modes = RECORD_MODES if sc.seed < args.records_seeds else ("single",)
        for mode in modes:
            events = [event_from_dict(e) for e in with_records(logged, mode, seed=sc.seed).events]
            results.append(score(events, id=f"synthetic-real/{sc.family}/{sub}/i{iv}/{mode}/s{sc.seed}",
                                 source="synthetic-real", family=sc.family, subset=sub, interval=iv, records=mode,
                                 onset=sc.onset))
    log(f"synthetic-real: {len(results) - n0} streams")
    return results, scen


def corpus_results(root: Path, log) -> list[StreamResult]:
    runs, skipped = load_corpus(root)
    for why in skipped:
        log(f"corpus: skipped {why}")
    out = []
    for run in runs:
        out.append(score(run.events, id=f"{run.source}/{run.name}", source=run.source, family=run.family,
                         subset=run.subset, interval=run.interval, records="single", onset=run.onset,
                         earliest_onset=run.earliest_onset))
    log(f"corpus: {len(out)} runs ({len(skipped)} folders skipped)")
    return out


def legacy_sections(args, scen) -> None:
    """The baselines, the recorded traces and the throughput, on the old families at interval 1."""
    bseeds = args.baseline_seeds
    keys = [k for k in args.baselines.split(",") if k]
    if keys and bseeds and any(scen.values()):
        print("### Baselines (synthetic-old families, interval 1, first seeds)\n")
        print("| detector | collapse detected | median delay | p95 delay | FA /10k healthy steps |")
        print("|---|---|---|---|---|")
        for key in keys:
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
        print("### Real traces (unlabelled; the labelled ones are the corpus above)\n")
        print("| trace | kind | steps | critical | warning | first critical (onset) | warnings |")
        print("|---|---|---|---|---|---|---|")
        for path, kind in real_rows:
            events = list(EventReader(path))
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
    if not healthy_events:
        return
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
    print(f"- {vals / best_wall:,.0f} metric values/s of wall time (load average {load:.1f} while measuring)\n")


def _intervals(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--intervals takes integers like 1,5,10, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--intervals needs logging intervals >= 1, got {text!r}")
    return out


SOURCES = ("synthetic-old", "synthetic-real", "corpus")


def _names(allowed):
    """An argparse type: a comma list, each name one of `allowed`."""
    def parse(text: str) -> tuple[str, ...]:
        out = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in out if x not in allowed]
        if bad or not out:
            raise argparse.ArgumentTypeError(f"unknown name(s) {', '.join(bad) or repr(text)}: expected a comma "
                                             f"list of {', '.join(allowed)}")
        return out
    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer seeds: under ~2 minutes on one core")
    p.add_argument("--seeds", type=int, default=None, help="old-family scenarios per family (default 30, quick 4)")
    p.add_argument("--real-seeds", type=int, default=None,
                   help="real-run collapse streams per family, subset and interval (default 20, quick 2)")
    p.add_argument("--healthy-seeds", type=int, default=None,
                   help="real-run healthy streams per family, subset and interval (default 30, quick 3)")
    p.add_argument("--records-seeds", type=int, default=None,
                   help="of those, how many also run as several records per step (default 3, quick 1)")
    p.add_argument("--intervals", type=_intervals, default=(1, 5, 10), help="logging intervals (default 1,5,10)")
    p.add_argument("--baseline-seeds", type=int, default=None, help="scenarios per family for baselines")
    p.add_argument("--steps", type=int, default=600, help="steps of an old-family scenario")
    p.add_argument("--baselines", default=",".join(BASELINES), help=f"comma list of {', '.join(BASELINES)}")
    p.add_argument("--throughput-seeds", type=int, default=5, help="healthy scenarios per family timed for throughput")
    p.add_argument("--corpus", type=Path, default=REPO / "bench" / "fixtures" / "corpus",
                   help="labelled real runs: <corpus>/ours/<run>/, <corpus>/public/<run>/")
    p.add_argument("--sources", type=_names(SOURCES), default=SOURCES,
                   help=f"comma list of {', '.join(SOURCES)} (default all)")
    p.add_argument("--families", type=_names(list(dict.fromkeys(FAILURES + HEALTHY + list(REAL_FAMILIES)))), default=None,
                   help="only these synthetic families (comma list; default all)")
    p.add_argument("--subsets", type=_names(list(SUBSETS)), default=None,
                   help=f"only these metric subsets of synthetic-real ({', '.join(SUBSETS)}; default all)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write every stream's result here")
    p.add_argument("--compare", type=Path, default=None, metavar="OLD",
                   help="a --json file of an earlier run: print what changed per stream")
    args = p.parse_args(argv)
    old = load_json(args.compare) if args.compare else None  # fail on a bad file before the long part
    args.seeds = args.seeds if args.seeds is not None else (4 if args.quick else 30)
    args.real_seeds = args.real_seeds if args.real_seeds is not None else (2 if args.quick else 20)
    args.healthy_seeds = args.healthy_seeds if args.healthy_seeds is not None else (3 if args.quick else 30)
    args.records_seeds = args.records_seeds if args.records_seeds is not None else (1 if args.quick else 3)
    args.baseline_seeds = args.baseline_seeds if args.baseline_seeds is not None else (2 if args.quick else 10)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:5.0f} s] {msg}", file=sys.stderr, flush=True)

    results, scen = synthetic_results(args, log)
    if "corpus" in args.sources:
        results += corpus_results(args.corpus, log)
    print(f"## Detection benchmark: {len(results)} streams (synthetic-old {args.seeds} seeds x {args.steps} steps "
          f"per family; synthetic-real {args.real_seeds} collapse / {args.healthy_seeds} healthy seeds per family x "
          f"subset x interval, "
          f"{args.records_seeds} of them also as several records per step; intervals "
          f"{', '.join(map(str, args.intervals))})\n")
    print("Detection: a critical alert at or after the onset; one before it is a false alarm. Delays in optimizer "
          "steps and in logged points. Healthy steps include the pre-onset part of collapses.\n")
    print("\n".join(goals(results)))
    print("\n".join(tables(results)))
    if old is not None:
        print("\n".join(compare(old, results)))
    legacy_sections(args, scen)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results, {"intervals": list(args.intervals), "seeds": args.seeds,
                                        "real_seeds": args.real_seeds,
                                        "healthy_seeds": args.healthy_seeds, "records_seeds": args.records_seeds})
        log(f"wrote {len(results)} stream results to {args.json}")
    print(f"benchmark wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
