"""`rlguard replay TRACE`: what the monitors (and policies) would have said on a recording.

    rlguard replay runs/x/metrics.jsonl                 # text for people
    rlguard replay runs/x --format json                 # a run directory works too
    rlguard replay trace.jsonl --config run.yaml        # monitors:/policies: sections, or a monitors-only file
    rlguard replay outputs/checkpoint-500               # a trainer's own logs: format chosen by content
    rlguard replay train.log --format trl-console --logging-steps 10   # forced, with the step rule

TRACE is METRICS.md JSONL, or any log orchestrator/logformats reads: trainer_state.json,
TensorBoard event files or directories, verl's file-logger JSONL and console log, OpenRLHF
stdout, trl/transformers console output, a W&B run directory. `--format` takes an output
format (json, text) and/or an input format name (repeat it for both).

With `--format json`, one JSON object per line on stdout: first the coverage (which failure
classes the trace's metrics arm, monitors/coverage.py; no "step"), then in step order every
alert and every decision:
    {"type": "coverage", "summary": "detection armed for 6/11 ...", "armed": [...], "off": [...],
     "gaps": ["kl not logged: kl_explosion off"], "metrics": [...], "classes": [{...}, ...]}
    {"step": 431, "type": "alert", "detector": "patterns", "code": "pattern_collapse", "metric": "kl",
     "severity": "critical", "onset_step": 418, "message": "..."}
    {"step": 431, "type": "action", "action": "rollback", "target_step": 400, "reason": "...", "params": {...}}
Bad lines of METRICS.md JSONL are counted and reported on stderr. A file in no known format
gets one error naming the formats tried. Exit 0 when the file was read, 2 when it cannot be
read at all (or the config is invalid).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from rlguard.monitors.alerts import Alert
from rlguard.monitors.config import MonitorConfig, MonitorConfigError, monitor_config_from_dict
from rlguard.monitors.stack import MonitorStack
from rlguard.orchestrator.logformats import LogFormatError, format_names, open_source

OUTPUT_FORMATS = ["json", "text"]
RUN_SECTIONS = {"monitors", "policies", "trainer", "supervisor", "run", "notify", "dashboards"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard replay", description=__doc__.split("\n\n")[0])
    p.add_argument("trace", help="a metrics.jsonl file, a run directory holding one, or a trainer's log file/directory")
    p.add_argument("--config", help="YAML: a run config (monitors:/policies: sections) or monitor settings alone")
    p.add_argument("--format", action="append", default=[], metavar="FORMAT",
                   choices=OUTPUT_FORMATS + format_names(),
                   help=f"output: {' or '.join(OUTPUT_FORMATS)} (json: one object per line; default text); input, to "
                        f"force it instead of detecting it: {', '.join(format_names())}")
    p.add_argument("--logging-steps", type=int, default=None, metavar="N",
                   help="trl-console logs without progress bars: the run's logging_steps, to count each dict's step")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="simulated checkpoint interval in steps, for rollback targets (default 50)")
    p.add_argument("--checkpoint-start", action="store_true",
                   help="also a simulated checkpoint of the starting state (step 0), as rlguard's built-in worker "
                        "writes by default (checkpoint_start): a collapse in the first updates can then roll back")
    p.add_argument("--no-policies", action="store_true", help="print alerts only, no decisions")
    return p


def load_configs(path: str | None) -> tuple[MonitorConfig, object | None]:
    """(monitor config, policy config or None) from a run config or a monitors-only file."""
    if path is None:
        return MonitorConfig(), None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise MonitorConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise MonitorConfigError(f"config {path} is not valid YAML: {e}") from None
    data = data or {}
    if isinstance(data, dict) and data and set(data) <= RUN_SECTIONS:
        mon = monitor_config_from_dict(data.get("monitors") or {}, f"{path}: monitors")
        pol = None
        if data.get("policies") is not None:
            from rlguard.policies.config import policy_config_from_dict

            pol = policy_config_from_dict(data["policies"], f"{path}: policies")
        return mon, pol
    return monitor_config_from_dict(data, str(path)), None


def _alert_record(a: Alert) -> dict:
    return {"step": a.step, "type": "alert", "detector": a.detector, "code": a.code, "metric": a.metric,
            "severity": a.severity.value, "onset_step": a.onset_step, "message": a.message}


def _decision_record(d) -> dict:
    rec = {"step": d.step, "type": "action"}
    rec.update(d.to_dict())
    rec["step"] = d.step
    return rec


def _text(rec: dict) -> str:
    if rec["type"] == "alert":
        return (f"step {rec['step']:>6}  {rec['severity'].upper():<8} {rec['code']} [{rec['metric'] or '-'}]"
                f" onset {rec['onset_step']}: {rec['message']}")
    target = f" -> step {rec['target_step']}" if rec.get("target_step") is not None else ""
    params = f" {rec['params']}" if rec.get("params") else ""
    mode = f" ({rec['mode']})" if rec.get("mode") not in (None, "auto") else ""
    return f"step {rec['step']:>6}  ACTION   {rec['action']}{target}{params}{mode}: {rec['reason']}"


def print_coverage(events, fmt: str, out) -> None:
    """What the trace's metrics arm and what they leave off, before the alerts: a user must know
    what the replay could NOT have caught."""
    from rlguard.monitors.coverage import CoverageTracker, text_block

    tracker = CoverageTracker()
    for ev in events:
        tracker.observe(ev.metrics)
    rep = tracker.current
    lines = [json.dumps({"type": "coverage", **rep})] if fmt == "json" else text_block(rep)
    out.write("".join(line + "\n" for line in lines))


def _make_simulator(policy_config, checkpoint_every: int, checkpoint_start: bool = False):
    try:
        from rlguard.policies.replay import ReplaySimulator
    except ImportError:
        return None
    return ReplaySimulator(policy_config=policy_config, checkpoint_every=checkpoint_every,
                           checkpoint_start=checkpoint_start)


def replay(events, stack: MonitorStack, simulator, emit) -> int:
    """Feed `events` through `stack` (and `simulator`); `emit(record)` per alert/decision. Returns the count."""
    pending: list[Alert] = []  # stall alerts, handed to the policies with the next event
    n = 0
    for ev in events:
        n += 1
        if ev.time is not None:
            pending.extend(stack.check_stall(ev.time))
        alerts = pending + stack.update(ev)
        pending = []
        for a in alerts:
            emit(_alert_record(a))
        if simulator is not None:
            for d in simulator.observe(ev.step, alerts, ev.metrics):
                emit(_decision_record(d))
    return n


def _formats(args) -> tuple[str, str | None]:
    """(output format, input format or None) from the repeated --format values."""
    out = [f for f in args.format if f in OUTPUT_FORMATS]
    inp = [f for f in args.format if f not in OUTPUT_FORMATS]
    if len(set(out)) > 1 or len(set(inp)) > 1:
        raise LogFormatError(f"--format given twice for the same thing: {', '.join(args.format)}")
    return (out[0] if out else "text"), (inp[0] if inp else None)


def read_trace(trace: Path, fmt: str | None, logging_steps: int | None = None):
    """(format name, events, summary) of a whole trace; LogFormatError / OSError when unreadable."""

    def bad(e):
        print(f"rlguard replay: {source_path}: {e}", file=sys.stderr)

    source_path = trace
    if fmt is None and trace.is_dir() and (trace / "metrics.jsonl").is_file():
        source_path = trace = trace / "metrics.jsonl"
    if not trace.exists():
        raise LogFormatError(f"cannot read {trace}: no such file")
    if fmt is None and trace.is_file() and trace.stat().st_size == 0:
        fmt = "metrics-jsonl"  # an empty file (a run that logged nothing yet) reads as before: 0 events
    name, src = open_source(trace, fmt, on_error=bad, logging_steps=logging_steps)
    events = src.poll() + src.close()
    return name, events, src.summary()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    trace = Path(args.trace)
    try:
        out_format, in_format = _formats(args)
        mon_cfg, pol_cfg = load_configs(args.config)
    except Exception as e:  # MonitorConfigError, PolicyConfigError: one clear message, exit 2
        print(f"rlguard replay: {e}", file=sys.stderr)
        return 2
    if args.checkpoint_every < 1:
        print("rlguard replay: --checkpoint-every must be >= 1", file=sys.stderr)
        return 2
    stack = MonitorStack(mon_cfg)
    simulator = None if args.no_policies else _make_simulator(pol_cfg, args.checkpoint_every, args.checkpoint_start)
    counts = {"warning": 0, "critical": 0, "actions": 0}
    out = sys.stdout

    def emit(rec: dict) -> None:
        if rec["type"] == "alert":
            counts[rec["severity"]] += 1
        else:
            counts["actions"] += 1
        out.write((json.dumps(rec, allow_nan=True) if out_format == "json" else _text(rec)) + "\n")

    try:
        name, events, summary = read_trace(trace, in_format, args.logging_steps)
    except LogFormatError as e:
        print(f"rlguard replay: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rlguard replay: cannot read {trace}: {e.strerror or e}", file=sys.stderr)
        return 2
    print_coverage(events, out_format, out)
    replay(events, stack, simulator, emit)
    out.flush()
    policies = "policies not available" if simulator is None and not args.no_policies else (
        "policies off" if simulator is None else f"{counts['actions']} decisions")
    if trace.is_dir() and name == "metrics-jsonl":
        trace = trace / "metrics.jsonl"
    read = summary if name == "metrics-jsonl" else f"read as {summary}, {len(events)} events"
    print(f"rlguard replay: {trace}: {read}; {counts['critical']} critical and "
          f"{counts['warning']} warning alerts; {policies}", file=sys.stderr)
    return 0
