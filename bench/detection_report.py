"""The markdown tables of bench/detection.py, from the scored streams (bench/detection_score.py).

The goals are issue 13's, each printed beside the measured figure with PASS / FAIL:
- corpus (ours, public): every collapse critical within 2 logged points of its onset; 0
  critical false alarms on every healthy run;
- synthetic: each family detected in >= 95% of its streams, median delay <= 10 steps at logging
  interval 1 and <= 2 logged points at intervals 5 and 10; 0 critical false alarms over >=
  100,000 healthy steps with every metric subset.
Family rates and delays are over the single-record streams; the several-records-per-step
variants are judged by whether they give the same first critical alert as their single twin.
"""

from __future__ import annotations

from bench.detection_score import ROW_HEAD, Row, group, median, row_cells

CORPUS = ("ours", "public")
SYNTHETIC = ("synthetic-old", "synthetic-real")
MIN_RATE, MAX_DELAY_I1, MAX_DELAY_POINTS, MIN_HEALTHY_STEPS = 0.95, 10, 2, 100_000


def _pf(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")


def _table(title: str, first_cols: str, rows: dict, lines: list[str]) -> None:
    lines += [f"### {title}", "", f"| {first_cols} | {ROW_HEAD} |",
              "|" + "---|" * (first_cols.count("|") + 1 + ROW_HEAD.count("|") + 1)]
    for k, row in rows.items():
        key = " | ".join(str(x) for x in (k if isinstance(k, tuple) else (k,)))
        lines.append(f"| {key} | {row_cells(row)} |")
    lines.append("")


def goals(results) -> list[str]:
    single = [r for r in results if r.records == "single"]
    corpus = [r for r in single if r.source in CORPUS]
    lines = ["### Goals (issue 13)", "", "| goal | measured | verdict |", "|---|---|---|"]
    col = [r for r in corpus if r.collapse]
    ok = [r for r in col if r.first_critical is not None and r.delay_points <= MAX_DELAY_POINTS]
    missed = [f"{r.id} ({'+' + str(r.delay_points) + ' pts' if r.first_critical else 'missed'})"
              for r in col if r not in ok]
    lines.append(f"| corpus: every collapse critical within {MAX_DELAY_POINTS} logged points of its onset "
                 f"| {len(ok)}/{len(col)}{'; not: ' + ', '.join(missed[:8]) if missed else ''} "
                 f"| {_pf(len(ok) == len(col) if col else None)} |")
    hl = [r for r in corpus if not r.collapse]
    bad = [f"{r.id} ({', '.join(r.false_codes[:2])})" for r in hl if r.false_critical]
    lines.append(f"| corpus: 0 critical false alarms on every healthy run | {len(bad)} of {len(hl)} healthy runs "
                 f"alarmed{'; ' + ', '.join(bad[:8]) if bad else ''} | {_pf(not bad if hl else None)} |")
    pre = sum(r.false_critical for r in col)
    if pre:
        lines.append(f"| corpus: (collapses alarmed before their onset) | {pre} critical alerts | - |")
    syn = [r for r in single if r.source in SYNTHETIC]
    fams = group([r for r in syn if r.collapse], lambda r: (r.source, r.family))
    for (src, fam), row in fams.items():
        by_iv = group([r for r in syn if r.collapse and r.source == src and r.family == fam], lambda r: r.interval)
        cells, passed = [], row.rate >= MIN_RATE
        for iv, rw in by_iv.items():
            if iv == 1:
                d = rw.median_delay()
                cells.append(f"i1 {median(rw.delays)} steps")
                passed &= d is not None and d <= MAX_DELAY_I1
            else:
                d = rw.median_delay_points()
                cells.append(f"i{iv} {median(rw.delay_points)} pts")
                passed &= d is not None and d <= MAX_DELAY_POINTS
        lines.append(f"| {src} {fam}: >= 95% critical, median delay <= 10 steps (i1) / <= 2 points (i5, i10) "
                     f"| {100 * row.rate:.0f}% ({row.detected}/{row.collapses}); {', '.join(cells)} | {_pf(passed)} |")
    subs = group([r for r in syn if r.source == "synthetic-real" or r.source == "synthetic-old"],
                 lambda r: r.subset)
    for sub, row in subs.items():
        verdict = _pf(row.false_critical == 0) if row.false_critical or row.healthy_steps >= MIN_HEALTHY_STEPS \
            else "n/a (too few steps)"
        lines.append(f"| synthetic subset {sub}: 0 critical false alarms over >= 100,000 healthy steps "
                     f"| {row.false_critical} over {row.healthy_steps:,} healthy steps | {verdict} |")
    same, n = records_agreement(results)
    lines.append(f"| several records per step give the same first critical as one record | {same}/{n} streams "
                 f"| {_pf(same == n if n else None)} |")
    lines.append("")
    return lines


def records_agreement(results) -> tuple[int, int]:
    base = {r.id.rsplit("/", 2)[0] + "/" + r.id.rsplit("/", 1)[1]: r for r in results
            if r.source == "synthetic-real" and r.records == "single"}
    same = n = 0
    for r in results:
        if r.records == "single" or r.source != "synthetic-real":
            continue
        twin = base.get(r.id.rsplit("/", 2)[0] + "/" + r.id.rsplit("/", 1)[1])
        if twin is None:
            continue
        n += 1
        same += (twin.first_critical, twin.false_critical) == (r.first_critical, r.false_critical)
    return same, n


def tables(results) -> list[str]:
    lines: list[str] = []
    single = [r for r in results if r.records == "single"]
    _table("Per source and logging interval", "source | interval", group(single, lambda r: (r.source, r.interval)),
           lines)
    for src in SYNTHETIC:
        rows = group([r for r in single if r.source == src], lambda r: (r.family, r.interval))
        if rows:
            _table(f"{src}: per family and logging interval", "family | interval", rows, lines)
    _table("Per metric subset and logging interval (synthetic-real; synthetic-old is ppo_old; corpus: the "
           "witnesses present)", "subset | interval",
           group(single, lambda r: (r.subset, r.interval)), lines)
    rec = [r for r in results if r.source == "synthetic-real" and r.id.rsplit("/", 1)[1] in _records_seeds(results)]
    if any(r.records != "single" for r in rec):
        same_by: dict = {}
        for r in rec:
            same_by.setdefault((r.records, r.interval), Row()).add(r)
        _table("Several records per step (synthetic-real, the seeds that have every variant)", "records | interval",
               dict(sorted(same_by.items())), lines)
    corpus = [r for r in single if r.source in CORPUS]
    lines += ["### Corpus runs", ""]
    if not corpus:
        lines += ["(no labelled runs in bench/fixtures/corpus/ours or /public yet)", ""]
    else:
        lines += ["| run | class | interval | witnesses | points | onset | first critical (code) | delay steps / points "
                  "| critical before onset / in a healthy run |", "|---|---|---|---|---|---|---|---|---|"]
        for r in corpus:
            first = f"{r.first_critical} ({r.code})" if r.first_critical is not None else "-"
            delay = f"{r.delay_steps} / {r.delay_points}" if r.first_critical is not None else "-"
            lines.append(f"| {r.id} | {r.family} | {r.interval} | {r.subset} | {r.points} | {r.onset} | {first} "
                         f"| {delay} | {r.false_critical} {', '.join(r.false_codes[:3])} |")
        lines.append("")
    return lines


def _records_seeds(results) -> set[str]:
    return {r.id.rsplit("/", 1)[1] for r in results if r.source == "synthetic-real" and r.records != "single"}
