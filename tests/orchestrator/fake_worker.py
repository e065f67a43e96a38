"""A small worker that uses the real SDK and misbehaves on purpose, keyed by attempt number.

    python fake_worker.py --scenario S.json --run-dir RUN [--resume CKPT]

Scenario JSON: {"steps": 20, "checkpoint_every": 2, "step_s": 0.0,
                "faults": {"<attempt>": {"nan_at": 7, "crash_at": 5, "hang_at": 4, "freeze_at": 4,
                                         "sigkill_at": 6, "collapse_at": 30, "corrupt_ckpt_at": 6,
                                         "fail_load": true}}}
  nan_at       kl is NaN from this step on (in this attempt)
  crash_at     exit code 3 right after reporting this step
  sigkill_at   SIGKILL itself after this step (what the OOM killer does)
  hang_at      main loop sleeps forever after this step (heartbeats continue)
  freeze_at    SIGSTOP itself after this step (no heartbeats at all)
  collapse_at  from this step: kl and response_length climb, perplexity falls, reward rises
  corrupt_ckpt_at  the checkpoint of this step gets a flipped byte after it is written
  fail_load    refuse every in-process load command
Scenario "log_from": {"entropy": 5} adds a metric from a step on (a trainer that logs it late).
The checkpoint state is {"step": N}; a run restored from step N continues at N+1. Every
event's metrics include the constraint values in force (kl_coef, clip_range, lr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlguard.orchestrator.commands import CommandKind  # noqa: E402
from rlguard.orchestrator.sdk import connect  # noqa: E402
from rlguard.ppo.checkpoint_files import (  # noqa: E402
    CheckpointError,
    checkpoint_dir_name,
    verify_checkpoint,
    write_checkpoint_dir,
)


def metrics_for(step: int, fault: dict, constraints: dict) -> dict:
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
    m.update(constraints)
    return m


def save(run_dir: Path, step: int, constraints: dict, corrupt: bool) -> Path:
    def write(tmp: Path) -> None:
        (tmp / "state.json").write_text(json.dumps({"step": step, "constraints": constraints}))
        (tmp / "weights.bin").write_bytes(bytes(range(256)) * 4)

    path = write_checkpoint_dir(run_dir / "checkpoints" / checkpoint_dir_name(step), write, step=step,
                                constraints=constraints)
    if corrupt:
        p = path / "weights.bin"
        data = bytearray(p.read_bytes())
        data[10] ^= 0xFF
        p.write_bytes(bytes(data))
    return path


def load(path: str) -> dict:
    verify_checkpoint(path)
    return json.loads((Path(path) / "state.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--resume")
    args = ap.parse_args()
    sc = json.loads(Path(args.scenario).read_text())
    run_dir = Path(args.run_dir)
    client = connect(run_dir)
    constraints = {"kl_coef": 0.05, "clip_range": 0.2, "lr": 1e-5}
    step = 0
    resume = args.resume or client.resume_path
    if resume:
        state = load(resume)
        step = state["step"]
        constraints.update(state["constraints"])
    constraints.update(client.initial_constraints)
    while step < sc["steps"]:
        fault = sc.get("faults", {}).get(str(client.attempt), {})
        step += 1
        if sc.get("step_s"):
            time.sleep(sc["step_s"])
        metrics = metrics_for(step, fault, constraints)
        metrics.update({name: 0.5 for name, start in sc.get("log_from", {}).items() if step >= start})
        client.report(step, metrics)
        if fault.get("crash_at") == step:
            print(f"fake worker: crashing at step {step}", file=sys.stderr, flush=True)
            os._exit(3)
        if fault.get("sigkill_at") == step:
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.get("hang_at") == step:
            time.sleep(3600)
        if fault.get("freeze_at") == step:
            os.kill(os.getpid(), signal.SIGSTOP)
        want_save = step % sc.get("checkpoint_every", 2) == 0 or step == sc["steps"]
        stop = False
        for cmd in client.commands(step):
            if cmd.kind is CommandKind.SET_CONSTRAINTS:
                constraints.update(cmd.params)
            elif cmd.kind is CommandKind.SAVE:
                want_save = True
            elif cmd.kind is CommandKind.STOP:
                stop = True
            elif cmd.kind is CommandKind.LOAD:
                if fault.get("fail_load"):
                    client.done(cmd, False, "refusing to load (scenario fail_load)")
                    continue
                try:
                    state = load(cmd.params["path"])
                except CheckpointError as e:
                    client.done(cmd, False, str(e))
                    continue
                step = state["step"]
                constraints.update(state["constraints"])
                constraints.update(cmd.params.get("constraints") or {})
                want_save = False
                client.done(cmd, True, f"loaded step {step}")
        if want_save:
            corrupt = fault.get("corrupt_ckpt_at") == step
            client.checkpoint_written(step, save(run_dir, step, constraints, corrupt))
        if stop:
            break
    client.close("completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
