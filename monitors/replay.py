"""`rlguard replay TRACE.jsonl`: what the monitors (and policies) would have said on a recording.

    rlguard replay runs/x/metrics.jsonl                 # text for people
    rlguard replay runs/x --format json                 # a run directory works too
    rlguard replay trace.jsonl --config run.yaml        # monitors:/policies: sections, or a monitors-only file

With `--format json`, one JSON object per line on stdout: first the coverage (which failure
classes the trace's metrics arm, monitors/coverage.py; no "step"), then in step order every
alert and every decision:
    {"type": "coverage", "summary": "detection armed for 6/11 ...", "armed": [...], "off": [...],
     "gaps": ["kl not logged: kl_explosion off"], "metrics": [...], "classes": [{...}, ...]}
    {"step": 431, "type": "alert", "detector": "patterns", "code": "pattern_collapse", "metric": "kl",
     "severity": "critical", "onset_step": 418, "message": "..."}
    {"step": 431, "type": "action", "action": "rollback", "target_step": 400, "reason": "...", "params": {...}}
Bad lines are counted and reported on stderr. Exit 0 when the file was read, 2 when it cannot
be read at all (or the config is invalid).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from monitors.alerts import Alert
from monitors.config import MonitorConfig, MonitorConfigError, monitor_config_from_dict
from monitors.reader import EventReader
from monitors.stack import MonitorStack

RUN_SECTIONS = {"monitors", "policies", "trainer", "supervisor", "run", "notify", "dashboards"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlguard replay", description=__doc__.split("\n\n")[0])
    p.add_argument("trace", help="a metrics.jsonl file, or a run directory holding one")
    p.add_argument("--config", help="YAML: a run config (monitors:/policies: sections) or monitor settings alone")
    p.add_argument("--format", choices=["json", "text"], default="text", help="json: one object per line")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="simulated checkpoint interval in steps, for rollback targets (default 50)")
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
            from policies.config import policy_config_from_dict

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


def print_coverage(trace: Path, fmt: str, out) -> None:
    """What the trace's metrics arm and what they leave off, before the alerts: a user must know
    what the replay could NOT have caught. Reads the names in a pass of its own (bad lines are
    reported by the replay pass)."""
    from monitors.coverage import CoverageTracker, text_block

    tracker = CoverageTracker()
    for ev in EventReader(trace, on_error=lambda e: None, max_errors_kept=0):
        tracker.observe(ev.metrics)
    rep = tracker.current
    lines = [json.dumps({"type": "coverage", **rep})] if fmt == "json" else text_block(rep)
    out.write("".join(line + "\n" for line in lines))


def _make_simulator(policy_config, checkpoint_every: int):
    try:
        from policies.replay import ReplaySimulator
    except ImportError:
        return None
    return ReplaySimulator(policy_config=policy_config, checkpoint_every=checkpoint_every)


def replay(trace: Path, stack: MonitorStack, simulator, emit) -> EventReader:
    """Feed every event of `trace` through `stack` (and `simulator`); `emit(record)` per alert/decision."""

    def bad(e):
        print(f"rlguard replay: {trace}: {e}", file=sys.stderr)

    reader = EventReader(trace, on_error=bad, max_errors_kept=0)
    pending: list[Alert] = []  # stall alerts, handed to the policies with the next event
    for ev in reader:
        if ev.time is not None:
            pending.extend(stack.check_stall(ev.time))
        alerts = pending + stack.update(ev)
        pending = []
        for a in alerts:
            emit(_alert_record(a))
        if simulator is not None:
            for d in simulator.observe(ev.step, alerts, ev.metrics):
                emit(_decision_record(d))
    return reader


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    trace = Path(args.trace)
    if trace.is_dir():
        trace = trace / "metrics.jsonl"
    if not trace.is_file():
        print(f"rlguard replay: cannot read {trace}: no such file", file=sys.stderr)
        return 2
    try:
        mon_cfg, pol_cfg = load_configs(args.config)
    except Exception as e:  # MonitorConfigError, PolicyConfigError: one clear message, exit 2
        print(f"rlguard replay: {e}", file=sys.stderr)
        return 2
    if args.checkpoint_every < 1:
        print("rlguard replay: --checkpoint-every must be >= 1", file=sys.stderr)
        return 2
    stack = MonitorStack(mon_cfg)
    simulator = None if args.no_policies else _make_simulator(pol_cfg, args.checkpoint_every)
    counts = {"warning": 0, "critical": 0, "actions": 0}
    out = sys.stdout

    def emit(rec: dict) -> None:
        if rec["type"] == "alert":
            counts[rec["severity"]] += 1
        else:
            counts["actions"] += 1
        out.write((json.dumps(rec, allow_nan=True) if args.format == "json" else _text(rec)) + "\n")

    try:
        print_coverage(trace, args.format, out)
        reader = replay(trace, stack, simulator, emit)
    except OSError as e:
        print(f"rlguard replay: cannot read {trace}: {e.strerror or e}", file=sys.stderr)
        return 2
    out.flush()
    policies = "policies not available" if simulator is None and not args.no_policies else (
        "policies off" if simulator is None else f"{counts['actions']} decisions")
    print(f"rlguard replay: {trace}: {reader.summary()}; {counts['critical']} critical and "
          f"{counts['warning']} warning alerts; {policies}", file=sys.stderr)
    return 0
