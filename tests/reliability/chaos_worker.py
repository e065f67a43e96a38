"""A fast worker for the chaos suite: the real SDK, slow checkpoint writes, and a load log.

    python chaos_worker.py --scenario S.json --run-dir RUN [--resume CKPT]

Scenario JSON (all optional but `steps`):
    steps             last step of the run
    checkpoint_every  save every N steps (default 2)
    step_s            sleep per step (default 0.02)
    batch             prompts consumed per step: the data cursor advances by this much
    ckpt_bytes        size of the fake weights file (default 256 KiB)
    ckpt_chunk_s      sleep after every 64 KiB written: a slow disk, so a kill -9 lands mid-write
    faults            {"<attempt>": {"collapse_at": N, "nan_at": N, "hang_at": N}} as in
                      tests/orchestrator/fake_worker.py
    after_load_s      sleep after an in-process load, before the next sync carries its ack
    (RUN/chaos-finish appearing makes the worker end the run three steps later)
    save_errors       "exit": a failed save (ENOSPC) ends the worker with exit code 7;
                      "continue" (default): reported on stderr, training goes on
    flood             {"at_step": S, "rounds": R, "posts": P, "events_per_post": E, "names_per_event": K,
                      "unique_names": bool, "pause_s": T}: at step S, R rounds of P raw sync posts of
                      E events each go to the supervisor (see flood())

Why a separate file from tests/orchestrator/fake_worker.py: this worker records every
checkpoint it loads in RUN/loads.jsonl, with the sha256 it computed itself from the bytes it
read next to the manifest's, and every command it applied in RUN/applied.jsonl, so the
tests can prove that no corrupt checkpoint was ever loaded and no action was applied twice.
The training state is {"step", "cursor", "skipped", "constraints"}; the data cursor is
always batch * (step + skipped), and every event reports it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlguard.orchestrator.commands import CommandKind  # noqa: E402
from rlguard.orchestrator.sdk import connect  # noqa: E402
from rlguard.ppo.checkpoint_files import checkpoint_dir_name, read_manifest, write_checkpoint_dir  # noqa: E402

CHUNK = 64 << 10
WRITING_MARKER = ".chaos-writing"  # exists (with the step and pid) while a checkpoint is being written
FINISH_FILE = "chaos-finish"  # created by a test: the worker ends the run three steps later


def append_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def weights_for(step: int, size: int) -> bytes:
    seed = hashlib.sha256(f"weights-{step}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def metrics_for(step: int, fault: dict, state: dict, batch: int) -> dict:
    m = {"reward": 1.0 + 0.01 * step + 0.02 * math.sin(step), "kl": 0.02 + 0.002 * math.cos(step),
         "perplexity": 3.0 + 0.05 * math.sin(step * 1.3), "response_length": 40.0 + math.sin(step * 0.7)}
    onset = fault.get("collapse_at")
    if onset is not None and step >= onset:
        k = step - onset + 1
        m["kl"] += 0.15 * k
        m["response_length"] += 8.0 * k
        m["perplexity"] = max(1.01, m["perplexity"] - 0.3 * k)
        m["reward"] += 0.2 * k
    if fault.get("nan_at") is not None and step >= fault["nan_at"]:
        m["kl"] = float("nan")
    m.update(state["constraints"])
    m["cursor"] = float(state["cursor"])
    m["skipped"] = float(state["skipped"])
    return m


def save(run_dir: Path, state: dict, sc: dict) -> Path:
    size = int(sc.get("ckpt_bytes", 256 << 10))
    chunk_s = float(sc.get("ckpt_chunk_s", 0.0))
    step = state["step"]

    def write(tmp: Path) -> None:
        (tmp / "state.json").write_text(json.dumps(state))
        data = weights_for(step, size)
        with open(tmp / "weights.bin", "wb") as f:
            for i in range(0, size, CHUNK):
                f.write(data[i:i + CHUNK])
                f.flush()
                if chunk_s:
                    time.sleep(chunk_s)

    marker = run_dir / WRITING_MARKER
    marker.write_text(f"{step} {os.getpid()}")
    try:
        return write_checkpoint_dir(run_dir / "checkpoints" / checkpoint_dir_name(step), write, step=step,
                                    constraints=state["constraints"])
    finally:
        marker.unlink(missing_ok=True)


def load(run_dir: Path, path: str, attempt: int, how: str, decision_id: str = "") -> dict | None:
    """Read the checkpoint's bytes, hash them ourselves, and refuse it unless every hash matches."""
    record = {"attempt": attempt, "pid": os.getpid(), "path": str(path), "how": how, "decision_id": decision_id}
    try:
        manifest = read_manifest(path)
        files = {}
        for rel, info in manifest["files"].items():
            data = (Path(path) / rel).read_bytes()
            files[rel] = {"expected": info["sha256"], "actual": hashlib.sha256(data).hexdigest()}
        record["files"] = files
        ok = all(f["expected"] == f["actual"] for f in files.values())
        state = json.loads((Path(path) / "state.json").read_text()) if ok else None
    except (OSError, ValueError, KeyError) as e:
        ok, state, record["error"] = False, None, str(e)
    record["loaded"] = ok
    record["step"] = state["step"] if state else None
    record["state"] = state
    append_line(run_dir / "loads.jsonl", record)
    return state


def flood(client, spec: dict, attempt: int, run_dir: Path, step: int) -> int:
    """Post raw batches to the supervisor's worker channel, bypassing the SDK's one-event-per-call pace.

    `rounds` rounds of `posts` posts of `events_per_post` events; RUN/flood-<r> is written after
    round r (the test reads the supervisor's memory there), then a pause of `pause_s`."""
    posts, per_post = int(spec.get("posts", 50)), int(spec.get("events_per_post", 2000))
    names = int(spec.get("names_per_event", 4))
    # Steps continue from the worker's (the supervisor ignores steps it has seen); returns the last one.
    for r in range(int(spec.get("rounds", 1))):
        for p in range(posts):
            events = []
            for _ in range(per_post):
                step += 1
                prefix = f"flood_{step}_" if spec.get("unique_names") else "flood_"
                events.append({"step": step, "time": time.time(), "attempt": attempt,
                               "metrics": {f"{prefix}{i}": float(i) for i in range(names)}})
            body = json.dumps({"attempt": attempt, "pid": os.getpid(), "step": step, "status": "running",
                               "events": events, "checkpoints": [], "acks": [], "wait_s": 0.0}).encode()
            req = urllib.request.Request(client.url + "/api/worker/sync", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {client.token}",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    resp.read()
            except OSError as e:
                print(f"chaos worker: flood post {p} failed: {e}", file=sys.stderr, flush=True)
        (run_dir / f"flood-{r}").write_text(str(step))
        time.sleep(float(spec.get("pause_s", 1.0)))
    return step


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--resume")
    args = ap.parse_args()
    sc = json.loads(Path(args.scenario).read_text())
    run_dir = Path(args.run_dir)
    client = connect(run_dir)
    batch = int(sc.get("batch", 4))
    state = {"step": 0, "cursor": 0, "skipped": 0, "constraints": {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5}}
    resume = args.resume or client.resume_path
    if resume:
        loaded = load(run_dir, resume, client.attempt, "resume")
        if loaded is None:
            print(f"chaos worker: refusing corrupt checkpoint {resume}", file=sys.stderr, flush=True)
            return 6
        state = loaded
    if client.skip_batches:
        state["skipped"] += client.skip_batches
        state["cursor"] += batch * client.skip_batches
    state["constraints"].update(client.initial_constraints)
    step_s = float(sc.get("step_s", 0.02))
    while state["step"] < sc["steps"]:
        if (run_dir / FINISH_FILE).exists():  # the test has seen enough: finish within a few steps
            sc["steps"] = min(sc["steps"], state["step"] + 3)
        fault = sc.get("faults", {}).get(str(client.attempt), {})
        state["step"] += 1
        state["cursor"] += batch
        if step_s:
            time.sleep(step_s)
        client.report(state["step"], metrics_for(state["step"], fault, state, batch))
        if sc.get("flood") and state["step"] == int(sc["flood"].get("at_step", 5)) and client.attempt == 0:
            state["step"] = flood(client, sc["flood"], client.attempt, run_dir, state["step"])
            state["cursor"] = batch * (state["step"] + state["skipped"])
        if fault.get("hang_at") == state["step"]:
            time.sleep(3600)
        want_save = state["step"] % int(sc.get("checkpoint_every", 2)) == 0 or state["step"] == sc["steps"]
        stop = False
        for cmd in client.commands(state["step"]):
            append_line(run_dir / "applied.jsonl", {"attempt": client.attempt, "pid": os.getpid(), "kind": cmd.kind.value,
                                                    "decision_id": cmd.decision_id, "step": state["step"]})
            if cmd.kind is CommandKind.SET_CONSTRAINTS:
                state["constraints"].update(cmd.params)
            elif cmd.kind is CommandKind.SAVE:
                want_save = True
            elif cmd.kind is CommandKind.STOP:
                stop = True
            elif cmd.kind is CommandKind.LOAD:
                loaded = load(run_dir, cmd.params["path"], client.attempt, "command", cmd.decision_id)
                if loaded is None:
                    client.done(cmd, False, "checkpoint failed its checksums")
                    continue
                state = loaded
                skip = int(cmd.params.get("skip_batches", 0) or 0)
                state["skipped"] += skip
                state["cursor"] += batch * skip
                state["constraints"].update(cmd.params.get("constraints") or {})
                want_save = False
                client.done(cmd, True, f"loaded step {state['step']}")
                time.sleep(float(sc.get("after_load_s", 0.0)))  # widens the window before the ack is sent
        if want_save:
            try:
                client.checkpoint_written(state["step"], save(run_dir, state, sc))
            except OSError as e:
                print(f"chaos worker: checkpoint at step {state['step']} failed: {e}", file=sys.stderr, flush=True)
                if sc.get("save_errors") == "exit":
                    client.close("failed")
                    return 7
        if stop:
            break
    client.close("completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
