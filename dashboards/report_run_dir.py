"""Reading a run directory (docs/INTERFACES.md "Run directory") for display.

Everything here is tolerant: a run directory may belong to a run that crashed mid-line,
to an older rlguard, or to a run rlguard only watched. Bad lines are counted with their
line numbers (`RunFiles.problems`) and skipped; unknown journal line types are ignored.

The journal (orchestrator/journal.py) is JSON Lines whose lines carry a `kind` (older or
foreign files: `type`/`event`). What is read from it:
    decision   {"kind": "decision", "phase": "decided", "decision_id": .., "decision": {...}}
               then {"kind": "decision", "phase": "done"|"failed"|.., "decision_id": ..,
               "action": .., "step": .., "outcome": {"message": ..}}; the Decision fields
               flat on a line are accepted too
    alert      {"kind": "alert", "alert": {...Alert.to_dict()}} or flat, or "alerts": [...]
    checkpoint {"kind": "checkpoint", "step": .., "path": .., "health": ..}
    state      {"kind": "state", "state": .., "reason": ..}
    restart    {"kind": "restart", "reason": ..}
    operator   {"kind": "operator", "command": .., "args": {..}, "source": ..}, and note
A line's "time" (or "ts"), when present, orders it among the metric events; otherwise it
is placed after the event of its step in the current segment (see `_merged`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rlguard.monitors.alerts import Alert
from rlguard.monitors.events import BadEvent, MetricEvent, parse_event_line
from rlguard.policies.decision import Decision
from rlguard.ppo.checkpoint_files import CheckpointError, list_checkpoints, read_manifest


@dataclass
class RunFiles:
    """The parsed contents of a run directory."""

    run_dir: Path
    events: list[MetricEvent] = field(default_factory=list)
    journal: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    manifests: dict[int, dict] = field(default_factory=dict)
    config_text: str = ""
    problems: list[str] = field(default_factory=list)


def _json_lines(path: Path, problems: list[str]):
    """(lineno, object) for each JSON object line; everything else becomes a problem."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError) as e:
                problems.append(f"{path.name} line {lineno}: not JSON ({getattr(e, 'msg', e)})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path.name} line {lineno}: expected a JSON object")
                continue
            yield lineno, obj


def read_run_files(run_dir: str | Path) -> RunFiles:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist (expected RUN/metrics.jsonl inside)")
    files = RunFiles(run_dir=run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.is_file():
        with open(metrics_path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    files.events.append(parse_event_line(raw, lineno))
                except BadEvent as e:
                    files.problems.append(f"metrics.jsonl {e}")
    else:
        files.problems.append("metrics.jsonl is missing: no curves to show")
    files.journal = [obj for _, obj in _json_lines(run_dir / "journal.jsonl", files.problems)]
    for lineno, obj in _json_lines(run_dir / "samples.jsonl", files.problems):
        if isinstance(obj.get("step"), int) and isinstance(obj.get("response", ""), str):
            files.samples.append(obj)
        else:
            files.problems.append(f"samples.jsonl line {lineno}: needs an integer 'step' and a string 'response'")
    for ckpt in list_checkpoints(run_dir / "checkpoints"):
        try:
            manifest = read_manifest(ckpt)
            files.manifests[int(manifest.get("step", int(ckpt.name[5:])))] = dict(manifest, path=str(ckpt))
        except CheckpointError as e:
            files.problems.append(str(e))
    config = run_dir / "config.yaml"
    if config.is_file():
        files.config_text = config.read_text(errors="replace")[:20_000]
    return files


def _line_type(obj: dict) -> str:
    return str(obj.get("type") or obj.get("kind") or obj.get("event") or "").lower()


def _line_time(obj: dict) -> float | None:
    t = obj.get("time", obj.get("ts"))
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def _line_step(obj: dict) -> int | None:
    for source in (obj, obj.get("decision"), obj.get("alert")):
        if isinstance(source, dict) and isinstance(source.get("step"), int):
            return source["step"]
    return None


def apply_journal_line(history, obj: dict, decided: dict[str, Decision] | None = None) -> None:
    """Feed one journal line to a RunHistory; unknown or malformed lines are ignored.

    decided: decision_id -> Decision of the "decided" lines seen so far, so that an outcome
    line (which carries only the id, action and step) updates its decision's row."""
    kind = _line_type(obj)
    decided = {} if decided is None else decided
    did = obj.get("decision_id") if isinstance(obj.get("decision_id"), str) else None
    try:
        if isinstance(obj.get("decision"), dict) or ("decision" in kind and ("action" in obj or did in decided)):
            if isinstance(obj.get("decision"), dict):
                decision = Decision.from_dict(obj["decision"])
                if did:
                    decided[did] = decision
            else:
                decision = decided.get(did) if did else None
                decision = decision or Decision.from_dict(obj)
            phase = obj.get("phase") or kind
            history.on_decision(decision, phase, obj.get("outcome", obj.get("result")), decision_id=did)
        elif isinstance(obj.get("alert"), dict) or ("alert" in kind and "code" in obj):
            history.on_alert(Alert.from_dict(obj["alert"] if isinstance(obj.get("alert"), dict) else obj))
        elif isinstance(obj.get("alerts"), list) and "alert" in kind:
            for a in obj["alerts"]:
                if isinstance(a, dict):
                    history.on_alert(Alert.from_dict(a))
        elif "checkpoint" in kind and isinstance(obj.get("step"), int):
            health = obj.get("health", obj.get("to", obj.get("status", "pending")))
            history.on_checkpoint(obj["step"], obj.get("path", ""), health)
        elif "state" in kind:
            state = obj.get("state", obj.get("to", obj.get("new")))
            if state is not None:
                history.on_state(state, str(obj.get("reason") or ""))
        elif "restart" in kind:
            history.on_restart(obj.get("reason", ""))
        elif kind == "operator":
            args = obj.get("args") or {}
            detail = " ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else str(args)
            history.on_note("operator", f"{obj.get('command', '?')} {detail} (via {obj.get('source', '?')})".replace(
                "  ", " "), obj.get("step"))
        elif kind == "note" and obj.get("message"):
            history.on_note("note", str(obj["message"]), obj.get("step"))
    except (KeyError, TypeError, ValueError):
        # A journal line from another version: not displayable, never fatal.
        pass


def _decision_key(obj: dict) -> tuple | None:
    d = obj.get("decision") if isinstance(obj.get("decision"), dict) else obj
    return (d.get("action"), d.get("step")) if "action" in d else None


def _merged(events: list[MetricEvent], journal: list[dict]) -> list[tuple[str, object]]:
    """Events and journal lines in one order (see the module docstring)."""
    timed = all(e.time is not None for e in events) and all(_line_time(j) is not None for j in journal)
    if timed:
        items = [(e.time, 0, i, ("event", e)) for i, e in enumerate(events)]
        items += [(_line_time(j), 1, i, ("journal", j)) for i, j in enumerate(journal)]
        return [x[3] for x in sorted(items, key=lambda x: x[:3])]
    # No clock: place each line by its step, never crossing into the next segment unless a
    # rollback or restart was journaled since (then the next stepped line is in the new one).
    out: list[tuple[str, object]] = []
    pos, n = 0, len(events)

    def goes_back(i: int) -> bool:
        return i > 0 and events[i].step <= events[i - 1].step

    def emit() -> None:
        nonlocal pos
        out.append(("event", events[pos]))
        pos += 1

    going_back, back_key = False, None
    for j in journal:
        step = _line_step(j)
        key = _decision_key(j)
        if step is not None:
            if going_back and key != back_key:
                while pos < n and not goes_back(pos):
                    emit()
                if pos < n:
                    emit()  # the first step of the new segment
                going_back = False
            while pos < n and events[pos].step <= step and not goes_back(pos):
                emit()
        out.append(("journal", j))
        if "restart" in _line_type(j) or (key is not None and key[0] == "rollback"):
            going_back, back_key = True, key
    out += [("event", e) for e in events[pos:]]
    return out


def load_run_dir(history, run_dir: Path, files: RunFiles | None = None) -> RunFiles:
    """Replay a run directory into `history` (a RunHistory); returns what was read."""
    files = files or read_run_files(run_dir)
    real_clock = history.clock
    decided: dict[str, Decision] = {}
    try:
        for kind, item in _merged(files.events, files.journal):
            if kind == "event":
                if item.time is not None:
                    history.clock = lambda t=item.time: t
                history.on_event(item)
            else:
                t = _line_time(item)
                if t is not None:
                    history.clock = lambda t=t: t
                apply_journal_line(history, item, decided)
    finally:
        history.clock = real_clock
    for step, manifest in files.manifests.items():
        if step not in history.checkpoints:
            # On disk but never journaled (e.g. a watched run): health unknown.
            history.on_checkpoint(step, manifest["path"], manifest.get("meta", {}).get("health", "unknown"))
    history.problems = list(files.problems)
    return files
