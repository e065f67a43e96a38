"""`rlguard report RUN_DIR [--out FILE]`: the run report people read after an incident.

One self-contained report.html (inline CSS, plots embedded as PNG data URIs: it opens
offline and can be attached to a ticket): a summary, every incident with the alerts that
led to it, the decision taken and sample responses before the onset, after it and after
the recovery; the four metrics of Zheng et al. (2023) and all the others with incident
and rollback markers and the rolled-back steps greyed; the constraints over time; the
decision, alert, checkpoint and segment tables; any unreadable input lines; and the run's
config.yaml with its secrets redacted (dashboards/redact.py), since the report is shared.

Works for any run directory: a clean run, one rolled back several times, one that halted,
one rlguard only watched (no journal), one whose files end mid-line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlguard.dashboards import report_html as H
from rlguard.dashboards.history import RunHistory
from rlguard.dashboards.redact import redact_config_text
from rlguard.dashboards.report_run_dir import RunFiles, load_run_dir, read_run_files
from rlguard.policies.decision import CONSTRAINT_NAMES

MAIN_METRICS = ("reward", "kl", "perplexity", "response_length")
MAX_TABLE_ROWS = 500
SAMPLES_PER_COLUMN = 2


@dataclass
class Incident:
    """A rollback or halt (or, in a run without decisions, a critical alert) and its alerts."""

    kind: str
    step: int
    segment: int
    onset_step: int
    decision: dict | None = None
    alerts: list[dict] = field(default_factory=list)


def find_incidents(history: RunHistory) -> list[Incident]:
    decisions = [d for d in history.decisions if d["action"] in ("rollback", "halt")]
    alerts = list(history.alerts)
    incidents: list[Incident] = []
    if decisions:
        prev_step: dict[int, int] = {}
        for d in decisions:
            seg = d.get("segment", 0)
            lo = prev_step.get(seg, -1)
            mine = [a for a in alerts if a.get("segment", 0) == seg and lo < a["step"] <= d["step"]]
            onset = min([a.get("onset_step", a["step"]) for a in mine] or [d["step"]])
            incidents.append(Incident(d["action"], d["step"], seg, onset, d, mine))
            prev_step[seg] = d["step"]
    else:
        for a in alerts:
            if a.get("severity") == "critical":
                incidents.append(Incident("alert", a["step"], a.get("segment", 0), a.get("onset_step", a["step"]),
                                          None, [a]))
    return incidents[:50]


def samples_by_segment(history: RunHistory, samples: list[dict]) -> list[tuple[int, dict]]:
    """(segment, sample): samples.jsonl is written in time order, so a step going back
    means the next segment (the first later one that starts at or before that step)."""
    starts = [s.start_step for s in history.segments] or [0]
    seg, last, out = 0, None, []
    for s in samples:
        if last is not None and s["step"] <= last:
            nxt = next((k for k in range(seg + 1, len(starts)) if starts[k] <= s["step"]), None)
            seg = nxt if nxt is not None else seg
        last = s["step"]
        out.append((seg, s))
    return out


def _incident_samples(inc: Incident, tagged: list[tuple[int, dict]]) -> list[tuple[str, list[dict]]]:
    same = [s for seg, s in tagged if seg == inc.segment]
    before = [s for s in same if s["step"] < inc.onset_step][-SAMPLES_PER_COLUMN:]
    during = [s for s in same if inc.onset_step <= s["step"] <= inc.step][-SAMPLES_PER_COLUMN:]
    columns = [(f"before the onset (step < {inc.onset_step})", before),
               (f"after the onset (steps {inc.onset_step}–{inc.step})", during)]
    if inc.kind == "rollback":
        after = [s for seg, s in tagged if seg > inc.segment][:SAMPLES_PER_COLUMN]
        columns.append((f"after the rollback to step {inc.decision.get('target_step')}", after))
    return columns


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (params or {}).items())


def _incidents_html(incidents: list[Incident], tagged) -> str:
    if not incidents:
        return "<p class=\"none\">No rollback, halt or critical alert: nothing interrupted this run.</p>"
    out = []
    for i, inc in enumerate(incidents, 1):
        d = inc.decision or {}
        if inc.kind == "rollback":
            title = f"Incident {i}: rolled back at step {inc.step} to step {d.get('target_step')}"
        elif inc.kind == "halt":
            title = f"Incident {i}: halted at step {inc.step}"
        else:
            title = f"Incident {i}: critical alert at step {inc.step}"
        alerts = "".join(f"<li>{H.pill(a.get('severity'))} step {H.esc(a['step'])} "
                         f"<b>{H.esc(a.get('code'))}</b> on {H.esc(a.get('metric'))}: {H.esc(a.get('message'))}</li>"
                         for a in inc.alerts[:12])
        more = f"<li class=\"muted\">… {len(inc.alerts) - 12} more</li>" if len(inc.alerts) > 12 else ""
        decided = ""
        if d:
            decided = (f"<p><b>Decision</b> ({H.esc(d.get('mode'))}): {H.esc(d.get('reason'))}"
                       + (f" · new constraints {H.esc(_fmt_params(d.get('params')))}" if d.get("params") else "")
                       + (f" · skip {H.esc(d.get('skip_batches'))} batches" if d.get("skip_batches") else "")
                       + f" · <span class=\"muted\">{H.esc(d.get('phase'))} {H.esc(d.get('outcome'))}</span></p>")
        out.append(f"<div class=\"incident {H.esc(inc.kind)}\"><h3>{H.esc(title)}</h3>"
                   f"<div class=\"muted\">segment {inc.segment} · estimated onset step {inc.onset_step}</div>"
                   f"<ul>{alerts or '<li class=none>no alert recorded before it</li>'}{more}</ul>{decided}"
                   f"{H.sample_columns(_incident_samples(inc, tagged))}</div>")
    return "".join(out)


def _summary(history: RunHistory, files: RunFiles, incidents: list[Incident]) -> str:
    state = history.states[-1]["state"] if history.states else ""
    if not state and any(d["action"] == "halt" for d in history.decisions):
        state = "halted"
    crit = sum(1 for a in history.alerts if a.get("severity") == "critical")
    rollbacks = sum(1 for d in history.decisions if d["action"] == "rollback")
    healthy = sum(1 for c in history.checkpoints.values() if c.get("health") == "healthy")
    last = history.segments[-1].last_step if history.segments else "-"
    return H.cards([
        ("final state", state or "unknown", "bad" if state in ("halted", "failed", "crashed") else ""),
        ("last step", last, ""),
        ("segments", len(history.segments), "warn" if len(history.segments) > 1 else ""),
        ("rollbacks", rollbacks, "warn" if rollbacks else "good"),
        ("critical alerts", crit, "bad" if crit else "good"),
        ("warnings", len(history.alerts) - crit, "warn" if len(history.alerts) > crit else ""),
        ("checkpoints (healthy)", f"{len(history.checkpoints)} ({healthy})", ""),
        ("unreadable lines", len(files.problems), "bad" if files.problems else "good"),
    ])


def _tables(history: RunHistory) -> str:
    decisions = [[f"<span class=num>{H.esc(d['step'])}</span>", H.esc(d.get("segment")), H.pill(d["action"]),
                  H.esc(d.get("mode")), H.esc(d.get("target_step") if d.get("target_step") is not None else ""),
                  H.esc(_fmt_params(d.get("params"))), H.esc(d.get("reason")),
                  H.esc(" ".join(str(x) for x in (d.get("phase"), d.get("outcome")) if x))]
                 for d in list(history.decisions)[-MAX_TABLE_ROWS:]]
    alerts = [[H.esc(a["step"]), H.esc(a.get("segment")), H.pill(a.get("severity")), H.esc(a.get("code")),
               H.esc(a.get("metric")), H.esc(a.get("onset_step")), H.esc(a.get("message"))]
              for a in list(history.alerts)[-MAX_TABLE_ROWS:]]
    ckpts = [[H.esc(c["step"]), H.pill(c.get("health") or "?"), H.esc(c.get("segment")), H.esc(c.get("path"))]
             for c in sorted(history.checkpoints.values(), key=lambda c: c["step"])]
    segs = [[H.esc(s.index), f"{s.start_step}–{s.last_step}",
             H.esc(f"steps ≥ {s.rolled_back_from} undone" if s.rolled_back_from is not None else "kept"),
             H.esc(s.reason or ("start" if s.index == 0 else ""))] for s in history.segments]
    log_rows = sorted(
        [(x.get("time") or 0, x.get("step"), "state", f"{x['state']}" + (f": {x['reason']}" if x.get("reason") else ""))
         for x in history.states]
        + [(x.get("time") or 0, x.get("step"), "restart", x.get("reason", "")) for x in history.restarts]
        + [(x.get("time") or 0, x.get("step"), x.get("kind", "note"), x.get("text", "")) for x in history.notes],
        key=lambda r: r[0])[-MAX_TABLE_ROWS:]
    run_log = [[H.esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""), H.esc(step),
                H.pill(kind), H.esc(text)] for t, step, kind, text in log_rows]
    dropped = f" (last {MAX_TABLE_ROWS} shown)" if len(history.alerts) > MAX_TABLE_ROWS else ""
    return ("<h2>Decisions</h2>" + H.table(
                ["step", "segment", "action", "mode", "target", "constraints", "reason", "phase / outcome"],
                decisions, "no decisions: the guardrails never acted")
            + f"<h2>Alerts{dropped}</h2>" + H.table(
                ["step", "segment", "severity", "code", "metric", "onset", "message"], alerts, "no alerts")
            + "<h2>Run log: states, restarts, operators</h2>" + H.table(
                ["time", "step", "what", "detail"], run_log, "nothing journaled")
            + "<h2>Checkpoints</h2>" + H.table(["step", "health", "segment", "path"], ckpts, "no checkpoints")
            + "<h2>Segments</h2>" + H.table(["#", "steps", "fate", "started by"], segs, "no metric events"))


def render_report(run_dir: Path, files: RunFiles | None = None) -> str:
    from rlguard.dashboards import report_plots as P  # matplotlib only when a report is written

    files = files or read_run_files(run_dir)
    history = RunHistory()
    load_run_dir(history, run_dir, files)
    incidents = find_incidents(history)
    tagged = samples_by_segment(history, files.samples)
    names = history.metric_names()
    main = [m for m in MAIN_METRICS if m in names]
    others = sorted(m for m in names if m not in MAIN_METRICS and m not in CONSTRAINT_NAMES)
    body = [_summary(history, files, incidents), "<h2>Incidents</h2>", _incidents_html(incidents, tagged)]
    body.append("<h2>The four metrics that reveal collapse</h2>" + H.legend())
    missing = [m for m in MAIN_METRICS if m not in names]
    if missing:
        body.append(f"<p class=\"muted\">Not in metrics.jsonl: {H.esc(', '.join(missing))}.</p>")
    body.append("<div class=\"grid g2\">" + "".join(H.img(P.metric_png(history, m, True), m) for m in main) + "</div>")
    if others:
        body.append("<h2>Other metrics</h2><div class=\"grid g3\">"
                    + "".join(H.img(P.metric_png(history, m, False), m) for m in others) + "</div>")
    png = P.constraints_png(history, list(CONSTRAINT_NAMES))
    body.append("<h2>Constraints over time</h2>" + (H.img(png, "constraints") if png else
                "<p class=\"none\">No constraint values in the stream and no constraint changes.</p>"))
    body.append(_tables(history))
    if files.problems:
        items = "".join(f"<li>{H.esc(p)}</li>" for p in files.problems[:200])
        body.append(f"<h2>Unreadable input ({len(files.problems)})</h2><ul>{items}</ul>")
    if files.config_text:  # the report is shared: the config's secrets stay behind
        body.append(f"<h2>Configuration</h2><details><summary>config.yaml (secrets redacted)</summary>"
                    f"<pre>{H.esc(redact_config_text(files.config_text))}</pre></details>")
    subtitle = f"{run_dir.resolve()} · generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} · {history.event_count} events"
    return H.page(f"rlguard run report: {run_dir.resolve().name}", subtitle, "".join(body))


def write_report(run_dir: str | Path, out: str | Path | None = None, files: RunFiles | None = None) -> Path:
    """Write the report atomically (temp file + rename); returns its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report.html"
    if out.is_dir():
        out = out / "report.html"
    text = render_report(run_dir, files)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlguard report", description="Write report.html for a run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (holds metrics.jsonl, journal.jsonl), "
                        "or a trainer's own log file or directory (any format `rlguard replay` reads)")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write the report: a file, or a directory to put report.html in "
                             "(default RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        print(f"rlguard report: {run_dir} is not a directory; pass the run directory (it holds metrics.jsonl)",
              file=sys.stderr)
        return 2
    if not run_dir.is_dir() or not ((run_dir / "metrics.jsonl").is_file() or (run_dir / "journal.jsonl").is_file()):
        from rlguard.dashboards.report_foreign import foreign_run_files
        from rlguard.orchestrator.logformats import LogFormatError

        try:
            files = foreign_run_files(run_dir)
        except LogFormatError as e:
            what = (f"{run_dir} has neither metrics.jsonl nor journal.jsonl (not a run directory), and "
                    if run_dir.is_dir() else "")
            print(f"rlguard report: {what}{e}", file=sys.stderr)
            return 2
        out = write_report(files.run_dir, args.out or files.run_dir / "report.html", files)
        print(f"wrote {out}")
        return 0
    out = write_report(run_dir, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
