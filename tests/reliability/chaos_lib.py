"""Shared pieces of the chaos suite and bench/chaos.py: configs around the chaos worker, a
supervisor in a child process (so it can be kill -9'd and its RSS read), the invariants
every run must keep, and the figures file artifacts/reliability.json.

The invariants (`check_run`) are the point of the suite; each returns a list of findings
(empty = the run kept its promises), so the bench can count them over many runs:
- every checkpoint load's sha256, computed by the worker from the bytes it read, matches
  the manifest (no corrupt checkpoint loaded);
- metrics.jsonl and journal.jsonl parse, except at most a torn last line;
- within an attempt steps go up by one; an attempt that started from a checkpoint
  continues at that checkpoint's step + 1 with the checkpoint's data cursor;
- the data cursor is batch * (step + skipped batches) on every event;
- every journaled decision has exactly one outcome; no decision's command was applied twice.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import yaml

from tests.orchestrator import harness

REPO = Path(__file__).resolve().parents[2]
CHAOS_WORKER = Path(__file__).with_name("chaos_worker.py")
SUMMARY_PATH = REPO / "artifacts" / "reliability.json"

# The same quiet detectors and fast timings as the orchestrator tests (NaN and a KL bound
# fire; nothing else), with a longer sync wait and tighter retention so kills hit pruning too.
QUIET_MONITORS = harness.QUIET_MONITORS
FAST_SUPERVISOR = {
    **harness.FAST_SUPERVISOR,
    "sync_wait_s": 2.0,
    "checkpoints": {"confirm_steps": 2, "keep_last": 6, "keep_healthy": 4},
}


def run_config(tmp: Path, scenario: dict, *, supervisor: dict | None = None, policies: dict | None = None,
               monitors: dict | None = None) -> dict:
    """The raw run config (YAML-able) that runs the chaos worker with `scenario`."""
    tmp.mkdir(parents=True, exist_ok=True)
    sc_path = tmp / "scenario.json"
    sc_path.write_text(json.dumps(scenario))
    sup = dict(FAST_SUPERVISOR)
    sup["command"] = [sys.executable, str(CHAOS_WORKER), "--scenario", str(sc_path), "--run-dir", "{run_dir}",
                      "{resume}"]
    sup.update(supervisor or {})
    return {"trainer": {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5},
            "monitors": monitors if monitors is not None else QUIET_MONITORS,
            "policies": policies if policies is not None else {"cooldown": {"steps": 3}},
            "supervisor": sup}


def wait_for(cond, timeout: float = 60.0, what: str = "condition", poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def read_jsonl(path: Path) -> list[dict]:
    """Every parseable line (a torn last line is skipped; tests check the count separately)."""
    out = []
    try:
        data = Path(path).read_text()
    except FileNotFoundError:
        return out
    for line in data.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def metric_count(run_dir: Path) -> int:
    try:
        return (Path(run_dir) / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------ supervisor as a child process


class SupervisorProcess:
    """`rlguard run` (or `--resume`) in a child process, output to RUN/../supervisor-N.log."""

    def __init__(self, run_dir: Path, config_path: Path | None = None, resume: bool = False, index: int = 0):
        self.run_dir = Path(run_dir)
        argv = [sys.executable, "-m", "rlguard.orchestrator.cli", "run", "-q"]
        argv += ["--resume", str(run_dir)] if resume else [str(config_path), "--out", str(run_dir)]
        self.log_path = self.run_dir.parent / f"supervisor-{index}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)
        self.log.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def kill_worker_group(run_dir: Path) -> int | None:
    """SIGKILL the worker's process group named in RUN/supervisor.json; returns the pid or None."""
    try:
        info = json.loads((Path(run_dir) / "supervisor.json").read_text())["worker"]
        os.killpg(int(info["pgid"]) if info.get("pgid") else int(info["pid"]), signal.SIGKILL)
        return int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_in_thread(sup, timeout_s: float = 120.0):
    """Supervisor.run() on a thread with a hard deadline; returns (thread, box) to join later."""
    box: dict = {}

    def target():
        try:
            box["result"] = sup.run()
        except BaseException:  # the supervisor itself crashed: the test reports it, with the traceback
            box["error"] = traceback.format_exc()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def join_supervisor(sup, thread, box, timeout_s: float = 120.0):
    thread.join(timeout_s)
    if thread.is_alive():
        sup.detach("test timeout")
        thread.join(15)
        if sup.live.worker is not None:
            sup.live.worker.stop(1.0)
        raise AssertionError(f"supervisor did not finish within {timeout_s} s; state {sup.live.state}")
    if "error" in box:
        raise SupervisorCrashed(box["error"])
    return box["result"]


class SupervisorCrashed(AssertionError):
    """Supervisor.run() raised: the supervisor process would have died."""


# ------------------------------------------------------------------ invariants


def check_loads(run_dir: Path) -> tuple[int, list[str]]:
    """(loads, findings): every load the worker made had every file's sha256 match the manifest."""
    findings = []
    loads = read_jsonl(Path(run_dir) / "loads.jsonl")
    for rec in loads:
        bad = {k: v for k, v in (rec.get("files") or {}).items() if v["expected"] != v["actual"]}
        if rec.get("loaded") and bad:
            findings.append(f"loaded {rec['path']} although {sorted(bad)} failed their checksums")
        if rec.get("how") == "resume" and not rec.get("loaded"):
            findings.append(f"the supervisor handed the worker a checkpoint that fails verification: {rec['path']}"
                            f" ({rec.get('error') or sorted(bad)})")
    return len(loads), findings


def check_stream(run_dir: Path, batch: int) -> list[str]:
    """metrics.jsonl readable (torn last line only); steps and data cursor consistent per attempt."""
    from rlguard.orchestrator.event_reader import EventReader

    findings = []
    path = Path(run_dir) / "metrics.jsonl"
    reader = EventReader(path)
    events = list(reader)
    raw = path.read_bytes()
    torn_allowed = 0 if raw.endswith(b"\n") else 1
    if reader.bad_lines > torn_allowed:
        findings.append(f"metrics.jsonl has {reader.bad_lines} unreadable lines: "
                        f"{[str(e) for e in reader.errors[:3]]}")
    loads = [r for r in read_jsonl(Path(run_dir) / "loads.jsonl") if r.get("loaded")]
    by_attempt: dict[int, list] = collections.defaultdict(list)
    for e in events:
        by_attempt[e.attempt or 0].append(e)
    for attempt, evs in sorted(by_attempt.items()):
        for a, b in zip(evs, evs[1:]):
            if b.step != a.step + 1:
                findings.append(f"attempt {attempt}: step {a.step} followed by {b.step}")
        for e in evs:
            cursor, skipped = e.metrics.get("cursor"), e.metrics.get("skipped")
            if cursor is not None and cursor != batch * (e.step + skipped):
                findings.append(f"attempt {attempt} step {e.step}: cursor {cursor} != {batch} * (step + {skipped})")
        start = [r for r in loads if r["attempt"] == attempt]
        if attempt > 0 and start:
            st = start[-1]["state"]
            first = evs[0]
            if first.step != st["step"] + 1:
                findings.append(f"attempt {attempt} loaded step {st['step']} but reported step {first.step} first")
            elif first.metrics.get("cursor", 0) < st["cursor"] + batch:
                findings.append(f"attempt {attempt}: data cursor went back from {st['cursor']} to "
                                f"{first.metrics.get('cursor')}")
    return findings


def check_journal(run_dir: Path) -> tuple[dict, list[str]]:
    """(counts, findings): journal readable; each decision decided once with exactly one outcome;
    no decision's command applied twice by the worker."""
    from rlguard.orchestrator.journal import read_journal

    findings = []
    j = read_journal(Path(run_dir) / "journal.jsonl")
    # A torn line is fine when it is the last one, or when a later `journal_repair` note says it was seen.
    lines = Path(run_dir, "journal.jsonl").read_bytes().split(b"\n")
    repaired_upto = max((i for i, line in enumerate(lines, 1) if b'"event": "journal_repair"' in line), default=0)
    extra_bad = [b for b in j.bad_lines if not (j.torn_tail and b is j.bad_lines[-1]) and b[0] > repaired_upto]
    if extra_bad:
        findings.append(f"journal.jsonl has unreadable lines besides a torn tail: {extra_bad[:3]}")
    decided: dict[str, int] = collections.Counter()
    outcomes: dict[str, list] = collections.defaultdict(list)
    for e in j.entries:
        if e.get("kind") != "decision":
            continue
        if e.get("phase") == "decided":
            decided[e["decision_id"]] += 1
        else:
            outcomes[e["decision_id"]].append(e["phase"])
    for did, n in decided.items():
        if n != 1:
            findings.append(f"{did} decided {n} times")
        if len(outcomes.get(did, [])) != 1:
            findings.append(f"{did} has outcomes {outcomes.get(did, [])} (expected exactly one)")
    for did in set(outcomes) - set(decided):
        findings.append(f"outcome for {did} that was never decided")
    applied = collections.Counter((r["decision_id"], r["kind"]) for r in read_jsonl(Path(run_dir) / "applied.jsonl")
                                  if r.get("decision_id"))
    for (did, kind), n in applied.items():
        if n > 1:
            findings.append(f"{kind} of {did} applied {n} times by the worker")
    # A rollback the worker carried out must be journaled as done: the journal may not say
    # "skipped" or "failed" about something that happened (the record of what was done is lost).
    for rec in read_jsonl(Path(run_dir) / "loads.jsonl"):
        did = rec.get("decision_id")
        if rec.get("loaded") and did and did in outcomes and outcomes[did] != ["done"]:
            findings.append(f"the worker loaded step {rec['step']} for {did}, but the journal's outcome is "
                            f"{outcomes[did]}")
    launches = collections.Counter(e.get("decision_id") for e in j.entries if e.get("event") == "launch"
                                   and e.get("decision_id"))
    findings += [f"{did} relaunched the worker {n} times" for did, n in launches.items() if n > 1]
    counts = {"decisions": len(decided), "outcomes": sum(len(v) for v in outcomes.values()),
              "bad_lines": len(j.bad_lines)}
    return counts, findings


def check_run(run_dir: Path, batch: int = 4) -> tuple[dict, list[str]]:
    loads, f1 = check_loads(run_dir)
    counts, f2 = check_journal(run_dir)
    counts["loads"] = loads
    return counts, f1 + f2 + check_stream(run_dir, batch)


# ------------------------------------------------------------------ figures file


def record(key: str, **figures) -> None:
    """Merge one test's figures into artifacts/reliability.json (read by bench/chaos.py --report).

    Keys: kind ("fault" or "input"), name, injected/tried, survived/refused, data_lost, crashes, note;
    test (the pytest node that measured them) is added when called under pytest."""
    SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        doc = json.loads(SUMMARY_PATH.read_text())
    except (OSError, ValueError):
        doc = {}
    # The test that measured the figures, named beside them in RELIABILITY.md ("file::test").
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].split("[")[0]
    test = test.replace("tests/reliability/", "") if test else ""
    figures = {"test": test, **figures} if test else figures
    doc.setdefault("entries", {})[key] = dict(figures, recorded=time.strftime("%Y-%m-%d %H:%M:%S"))
    tmp = SUMMARY_PATH.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, SUMMARY_PATH)


def seeded_rng(name: str) -> random.Random:
    """Reproducible randomness per test; RLGUARD_CHAOS_SEED changes all of them at once."""
    return random.Random(f"{os.environ.get('RLGUARD_CHAOS_SEED', '0')}-{name}")


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path
