"""Scoring one stream against its label, summing streams into rows, and diffing two bench runs.

A stream is labelled healthy (onset None) or collapse (onset = the first optimizer step that
shows the failure). Detection: the first critical alert at a step >= onset. A critical alert
before the onset (or anywhere in a healthy stream) is a false alarm. Delays are counted in
optimizer steps and in logged points (the index of the alert's logged step minus the index
of the first logged step >= onset), because at logging interval 10 "3 steps late" and
"1 point late" are the same thing.
"""

from __future__ import annotations

import bisect
import json
import statistics
from dataclasses import asdict, dataclass, field

from rlguard.monitors.stack import MonitorStack


@dataclass
class StreamResult:
    id: str                      # unique and stable across runs of the bench: the --compare key
    source: str                  # synthetic-old | synthetic-real | ours | public
    family: str                  # failure class or healthy kind
    subset: str                  # metric subset (synthetic) or the witnesses present (corpus)
    interval: int                # logging interval in optimizer steps
    records: str                 # single | dup | train_eval | split
    onset: int | None            # optimizer step; None: healthy
    steps: int                   # optimizer steps the stream covers
    points: int                  # logged points (distinct steps)
    healthy_steps: int           # optimizer steps before the onset (all of them when healthy)
    first_critical: int | None = None   # step of the first critical alert at/after onset
    code: str | None = None             # its code (detector reason)
    delay_steps: int | None = None
    delay_points: int | None = None
    false_critical: int = 0             # critical alerts before onset / in a healthy stream
    false_codes: list[str] = field(default_factory=list)
    warnings_healthy: int = 0           # warnings before onset / in a healthy stream
    first_warning_after_onset: int | None = None

    @property
    def collapse(self) -> bool:
        return self.onset is not None


def run_stack(events) -> list:
    """The default monitor stack over `events` (MetricEvent, in stream order); all its alerts."""
    stack = MonitorStack()
    out = []
    for ev in events:
        out += stack.update(ev)
    return out


def score(events, *, id: str, source: str, family: str, subset: str, interval: int, records: str,
          onset: int | None, alerts=None, earliest_onset: int | None = None) -> StreamResult:
    """Run the default stack on `events` (unless `alerts` is given) and score it against `onset`.

    `earliest_onset`: where the label says the failure began somewhere in [earliest_onset, onset]
    (samples every 10 steps: the last clean sample is before it), a critical alert in that window
    is an early detection (negative delay), not a false alarm."""
    if alerts is None:
        alerts = run_stack(events)
    steps = sorted({e.step for e in events})
    if not steps:
        return StreamResult(id, source, family, subset, interval, records, onset, 0, 0, 0)
    start = max(steps[0] - interval, 0)  # the step before the first logged window
    end = steps[-1]
    first_bad = onset if earliest_onset is None or onset is None else min(earliest_onset, onset)
    healthy_until = end if onset is None else min(first_bad - 1, end)
    r = StreamResult(id, source, family, subset, interval, records, onset, steps=end - start, points=len(steps),
                     healthy_steps=max(healthy_until - start, 0))
    onset_point = bisect.bisect_left(steps, onset) if onset is not None else None
    for a in alerts:
        critical = a.severity.value == "critical"
        if onset is None or a.step < first_bad:
            if critical:
                r.false_critical += 1
                r.false_codes.append(f"{a.code}@{a.step}")
            else:
                r.warnings_healthy += 1
        elif critical and r.first_critical is None:
            r.first_critical, r.code = a.step, a.code
            r.delay_steps = a.step - onset
            r.delay_points = bisect.bisect_left(steps, a.step) - onset_point
        elif not critical and r.first_warning_after_onset is None:
            r.first_warning_after_onset = a.step
    return r


# -- summing ---------------------------------------------------------------------------------------

def median(v) -> str:
    return "-" if not v else f"{statistics.median(v):g}"


def p95(v) -> str:
    if not v:
        return "-"
    s = sorted(v)
    return f"{s[min(len(s) - 1, int(0.95 * (len(s) - 1) + 0.5))]}"


@dataclass
class Row:
    """A group of streams: collapses caught and how late, false alarms on the healthy steps."""
    collapses: int = 0
    detected: int = 0
    within2: int = 0                     # detected within 2 logged points of the onset
    delays: list[int] = field(default_factory=list)
    delay_points: list[int] = field(default_factory=list)
    healthy_runs: int = 0
    healthy_runs_alarmed: int = 0        # healthy-labelled runs with >= 1 critical
    healthy_steps: int = 0               # incl. the pre-onset prefix of collapses
    false_critical: int = 0
    false_critical_healthy_runs: int = 0  # of which on healthy-labelled runs
    warnings: int = 0
    streams: int = 0

    def add(self, r: StreamResult) -> None:
        self.streams += 1
        self.healthy_steps += r.healthy_steps
        self.false_critical += r.false_critical
        self.warnings += r.warnings_healthy
        if r.collapse:
            self.collapses += 1
            if r.first_critical is not None:
                self.detected += 1
                self.delays.append(r.delay_steps)
                self.delay_points.append(r.delay_points)
                self.within2 += r.delay_points <= 2
        else:
            self.healthy_runs += 1
            self.healthy_runs_alarmed += r.false_critical > 0
            self.false_critical_healthy_runs += r.false_critical

    @property
    def rate(self) -> float:
        return self.detected / self.collapses if self.collapses else float("nan")

    def fa_per_100k(self) -> float:
        return 1e5 * self.false_critical / self.healthy_steps if self.healthy_steps else float("nan")

    def fa_per_run(self) -> float:
        return self.false_critical_healthy_runs / self.healthy_runs if self.healthy_runs else float("nan")

    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    def median_delay_points(self) -> float | None:
        return statistics.median(self.delay_points) if self.delay_points else None


def group(results, key) -> dict:
    rows: dict = {}
    for r in results:
        k = key(r)
        if k is None:
            continue
        rows.setdefault(k, Row()).add(r)
    return dict(sorted(rows.items(), key=lambda kv: _order(kv[0])))


def _order(key) -> tuple:
    """Sort keys numerically where they are numbers (interval 5 before 10), else by name."""
    return tuple((0, x, "") if isinstance(x, int) else (1, 0, str(x)) for x in (key if isinstance(key, tuple) else (key,)))


def row_cells(row: Row) -> str:
    """The standard cells: collapses | median delay steps (p95) | median delay points | healthy | FA."""
    det = f"{row.detected}/{row.collapses} ({100 * row.rate:.0f}%)" if row.collapses else "-"
    return (f"{det} | {median(row.delays)} ({p95(row.delays)}) | {median(row.delay_points)} "
            f"| {row.healthy_runs} | {row.healthy_runs_alarmed} | {row.healthy_steps:,} | {row.false_critical} "
            f"| {row.fa_per_100k():.1f} | {row.fa_per_run():.2f} | {1e5 * row.warnings / max(row.healthy_steps, 1):.0f}")


ROW_HEAD = ("collapses critical | median delay steps (p95) | median delay points | healthy runs "
            "| healthy runs with a critical | healthy steps | critical FA | critical FA /100k steps "
            "| critical FA /healthy run | warnings /100k steps")


# -- JSON and --compare ----------------------------------------------------------------------------

def write_json(path, results, meta: dict) -> None:
    # One stream per line: a before/after pair diffs line by line in git too.
    head = json.dumps({"version": 1, **meta})[:-1]
    with open(path, "w") as fh:
        fh.write(head + ', "streams": [\n')
        fh.write(",\n".join(json.dumps(asdict(r), separators=(",", ":")) for r in results))
        fh.write("\n]}\n")


def load_json(path) -> dict[str, dict]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--compare {path}: cannot read it ({e}); give a file written by --json") from None
    if not isinstance(data, dict) or "streams" not in data:
        raise SystemExit(f"--compare {path}: no 'streams' list; give a file written by bench/detection.py --json")
    return {s["id"]: s for s in data["streams"]}


def compare(old: dict[str, dict], new: list[StreamResult], limit: int = 40) -> list[str]:
    """Markdown lines: streams newly detected, newly missed, with new or gone false alarms, and
    how the delays moved, between an old --json and this run (matched by stream id)."""
    cur = {r.id: asdict(r) for r in new}
    both = [i for i in cur if i in old]
    kinds: dict[str, list[str]] = {"newly detected": [], "newly missed": [], "new false alarms": [],
                                   "false alarms gone": [], "detected earlier": [], "detected later": []}
    for i in both:
        o, n = old[i], cur[i]
        if n["onset"] is not None:
            if o["first_critical"] is None and n["first_critical"] is not None:
                kinds["newly detected"].append(f"{i}: {n['code']} +{n['delay_points']} pts / +{n['delay_steps']} steps")
            elif o["first_critical"] is not None and n["first_critical"] is None:
                kinds["newly missed"].append(f"{i}: was {o['code']} +{o['delay_points']} pts")
            elif o["first_critical"] is not None and n["first_critical"] != o["first_critical"]:
                k = "detected earlier" if n["first_critical"] < o["first_critical"] else "detected later"
                kinds[k].append(f"{i}: step {o['first_critical']} -> {n['first_critical']}")
        if n["false_critical"] > o["false_critical"]:
            kinds["new false alarms"].append(f"{i}: {o['false_critical']} -> {n['false_critical']} "
                                             f"({', '.join(n['false_codes'][:3])})")
        elif n["false_critical"] < o["false_critical"]:
            kinds["false alarms gone"].append(f"{i}: {o['false_critical']} -> {n['false_critical']}")
    lines = [f"### Compared with the old run ({len(both)} streams in both, {len(cur) - len(both)} only new, "
             f"{len(old) - len(both)} only old)", ""]
    lines.append("| change | streams |")
    lines.append("|---|---|")
    lines += [f"| {k} | {len(v)} |" for k, v in kinds.items()]
    lines.append("")
    for k in ("newly missed", "new false alarms", "newly detected", "false alarms gone"):
        if kinds[k]:
            lines.append(f"**{k}** ({len(kinds[k])}{', first ' + str(limit) if len(kinds[k]) > limit else ''}):")
            lines += [f"- {s}" for s in kinds[k][:limit]]
            lines.append("")
    return lines
