"""`rlguard status|pause|resume|rollback|relax|halt|approve RUN_DIR`: talk to a live supervisor.

The URL comes from RUN/supervisor.json and the bearer token from RUN/control.token (mode
0600: only the run's owner can steer it). The token is sent only to loopback or to the
`supervisor.host` of RUN/config.yaml, whatever URL supervisor.json names. `status` works
without a supervisor too: it then reads the journal and the checkpoint registry from disk.
Exit codes: 0 ok, 1 the supervisor refused (the message says why), 2 usage / unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from rlguard.orchestrator.http_guard import token_destination_problem
from rlguard.orchestrator.run_files import CONFIG_FILE, read_supervisor_info, read_token


class ControlError(Exception):
    pass


def configured_host(run_dir: Path) -> str | None:
    """supervisor.host from RUN/config.yaml (None: not set, or unreadable)."""
    try:
        host = (yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text()) or {}).get("supervisor", {}).get("host")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return host if isinstance(host, str) else None


def call(run_dir: Path, method: str, path: str, body: dict | None = None, timeout: float = 35.0) -> tuple[int, dict]:
    info = read_supervisor_info(run_dir)
    url = info.get("url")
    if not url:
        raise ControlError(f"{run_dir}: no supervisor.json with a URL (is this a run directory? is it running?)")
    url = str(url)
    headers = {"Content-Type": "application/json"}
    if method == "POST":
        problem = token_destination_problem(url, configured_host(run_dir))
        if problem:
            raise ControlError(f"{run_dir}/supervisor.json names {problem}")
        token = read_token(run_dir)
        if not token:
            raise ControlError(f"{run_dir}/control.token is missing or unreadable: only the run's owner can "
                               "control it")
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read() or b"{}")
        except ValueError:
            payload = {"error": e.reason}
        return e.code, payload
    except (urllib.error.URLError, OSError) as e:
        raise ControlError(f"supervisor at {url} is not answering ({getattr(e, 'reason', e)}); "
                           f"if it died: rlguard run --resume {run_dir}") from None


def _offline_status(run_dir: Path) -> dict:
    from rlguard.orchestrator.journal import read_journal

    entries = read_journal(run_dir / "journal.jsonl").entries
    state = next((e for e in reversed(entries) if e.get("kind") == "state"), {})
    alerts = [e["alert"] for e in entries if e.get("kind") == "alert"][-10:]
    registry = {}
    try:
        registry = json.loads((run_dir / "checkpoints" / "registry.json").read_text())
    except (OSError, ValueError):
        pass
    coverage = next((e for e in reversed(entries) if e.get("event") == "coverage"), None)
    return {"state": state.get("state", "unknown"), "reason": state.get("reason", ""), "step": state.get("step"),
            "supervisor": "not running", "alerts": alerts, "coverage": coverage,
            "checkpoints": [{"step": e["step"], "health": e["health"]} for e in registry.get("entries", [])]}


def _print_status(s: dict) -> None:
    print(f"state:        {s.get('state')}  ({s.get('reason', '')})")
    print(f"step:         {s.get('step')}   attempt: {s.get('attempt', '-')}   restarts left: "
          f"{s.get('restarts_left', '-')}   rollbacks: {s.get('rollbacks', '-')}")
    if s.get("constraints"):
        cons = ", ".join(f"{k}={v:g}" for k, v in sorted(s["constraints"].items()))
        init = ", ".join(f"{k}={v:g}" for k, v in sorted((s.get("initial_constraints") or {}).items()))
        print(f"constraints:  {cons}   (initial: {init})")
    if s.get("approval"):
        a = s["approval"]
        print(f"approval:     {a['decision_id']} {a['decision']['action']} waits ({a['seconds_left']:.0f} s left): "
              f"{a['decision']['reason']}")
    print("checkpoints:  " + (", ".join(f"{c['step']}:{c['health']}" for c in s.get("checkpoints", [])) or "none"))
    if s.get("coverage"):  # what the run's metrics do NOT let rlguard see
        c = s["coverage"]
        print(f"coverage:     {len(c['armed'])}/{len(c['classes'])} failure classes armed")
        for gap in c.get("gaps") or []:
            print(f"not watched:  {gap}")
    for a in (s.get("alerts") or [])[-5:]:
        print(f"alert:        step {a['step']} {a['severity']} {a['code']} {a.get('metric', '')}: {a.get('message', '')}")


def status_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rlguard status", description="State, step, alerts, checkpoints of a run.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    args = p.parse_args(argv)
    try:
        code, s = call(args.run_dir, "GET", "/api/status")
    except ControlError:
        if not (args.run_dir / "journal.jsonl").exists():
            print(f"rlguard status: {args.run_dir} is not a run directory (no journal.jsonl)", file=sys.stderr)
            return 2
        s = _offline_status(args.run_dir)
    print(json.dumps(s, indent=1, allow_nan=True)) if args.json else _print_status(s)
    return 0


def _post(prog: str, argv: list[str], path: str, extra=None, body_of=None) -> int:
    p = argparse.ArgumentParser(prog=f"rlguard {prog}")
    p.add_argument("run_dir", type=Path)
    if extra:
        extra(p)
    args = p.parse_args(argv)
    body = body_of(args) if body_of else {}
    body["source"] = "cli"
    try:
        code, reply = call(args.run_dir, "POST", path, body)
    except ControlError as e:
        print(f"rlguard {prog}: {e}", file=sys.stderr)
        return 2
    if code >= 400:
        print(f"rlguard {prog}: refused ({code}): {reply.get('error', reply)}", file=sys.stderr)
        return 1
    print(json.dumps(reply))
    return 0


def pause_main(argv: list[str]) -> int:
    return _post("pause", argv, "/api/pause")


def resume_main(argv: list[str]) -> int:
    return _post("resume", argv, "/api/resume")


def relax_main(argv: list[str]) -> int:
    return _post("relax", argv, "/api/relax")


def halt_main(argv: list[str]) -> int:
    return _post("halt", argv, "/api/halt", lambda p: p.add_argument("--reason", default="operator request"),
                 lambda a: {"reason": a.reason})


def rollback_main(argv: list[str]) -> int:
    def extra(p):
        p.add_argument("--to", type=int, required=True, metavar="STEP", help="step of a known checkpoint")
        p.add_argument("--skip-batches", type=int, default=0, help="batches to skip after restoring")

    return _post("rollback", argv, "/api/rollback", extra, lambda a: {"to_step": a.to, "skip_batches": a.skip_batches})


def approve_main(argv: list[str]) -> int:
    def extra(p):
        p.add_argument("decision_id", nargs="?", help="the pending decision (default: the one pending now)")
        p.add_argument("--deny", action="store_true", help="deny instead of approving")

    p = argparse.ArgumentParser(prog="rlguard approve")
    p.add_argument("run_dir", type=Path)
    extra(p)
    args = p.parse_args(argv)
    did = args.decision_id
    if did is None:
        try:
            _, s = call(args.run_dir, "GET", "/api/status")
        except ControlError as e:
            print(f"rlguard approve: {e}", file=sys.stderr)
            return 2
        if not s.get("approval"):
            print("rlguard approve: no decision is waiting for approval", file=sys.stderr)
            return 1
        did = s["approval"]["decision_id"]
    rest = [str(args.run_dir)]
    return _post("approve", rest, "/api/approve", None, lambda a: {"decision_id": did, "approve": not args.deny})
