"""The built-in worker under `torchrun --nproc_per_node 2` (gloo, CPU), supervised end to end:
a real `rlguard run`, an injected fault (one poisoned reward batch: NaN scores on every rank,
tests/orchestrator/collapse_reward.py) that is detected and rolled back in-process, and a run
that completes, with both ranks applying every command at the same step and holding
bit-identical weights after every step (gradients all-reduced).

Each rank appends `{"step", "attempt", "params", "kl_coef"}` per step to TRACE/rankR.jsonl
(this module is also the traced worker: `python -m tests.orchestrator.test_torchrun_ppo`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _params_digest(*models) -> str:
    h = hashlib.sha256()
    for model in models:
        for name, p in sorted(model.named_parameters()):
            if p.requires_grad:
                h.update(name.encode())
                h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def traced_main() -> int:
    """orchestrator.ppo_worker.main, with a per-rank trace of every step."""
    import rlguard.orchestrator.ppo_worker as worker

    real_train = worker.train

    def train(trainer, client, run_dir):
        out = Path(os.environ["RLGUARD_TEST_TRACE"]) / f"rank{trainer.rank}.jsonl"

        def record(step, metrics):
            with open(out, "a") as f:
                f.write(json.dumps({"step": step, "attempt": client.attempt, "kl_coef": metrics["kl_coef"],
                                    "params": _params_digest(trainer.policy, trainer.critic)}) + "\n")

        real_load = trainer.load_checkpoint

        def load_checkpoint(path):  # an in-process rollback
            real_load(path)
            with open(out, "a") as f:
                f.write(json.dumps({"loaded": trainer.step, "params": _params_digest(trainer.policy, trainer.critic)})
                        + "\n")

        trainer.on_step.append(record)
        trainer.load_checkpoint = load_checkpoint
        if trainer.step:  # a relaunch that resumed from a checkpoint (main() loaded it before train())
            with open(out, "a") as f:
                f.write(json.dumps({"loaded": trainer.step, "params": _params_digest(trainer.policy, trainer.critic)})
                        + "\n")
        return real_train(trainer, client, run_dir)

    worker.train = train
    return worker.main()


def _trace(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _run_config(tmp_path: Path, steps: int, torchrun_args: list[str], rollback_mode: str) -> Path:
    from rlguard.ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path / "tiny-lm")
    monitors = {name: {"enabled": False} for name in ("spike", "change_point", "drift", "patterns", "eval_shape",
                                                       "stall")}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    config = {
        "trainer": {"model": str(model), "reward": "tests.orchestrator.collapse_reward:nan_on_first_attempt",
                    "batch_size": 2, "minibatch_size": 2, "max_new_tokens": 16, "torch_threads": 1,
                    "eval_every": 0, "checkpoint_every": 3, "device": "cpu", "critic_pretrain_steps": 1,
                    "steps": steps},
        "monitors": monitors,
        "policies": {"cooldown": {"steps": 10}},
        "supervisor": {
            "command": [torchrun, *torchrun_args, "-m", "tests.orchestrator.test_torchrun_ppo",
                        "--config", "{config}", "--run-dir", "{run_dir}", "{resume}", "{overrides}"],
            "heartbeat_interval_s": 0.2, "heartbeat_timeout_s": 60, "step_timeout_s": 120, "startup_timeout_s": 120,
            "tick_s": 0.05, "rollback_mode": rollback_mode,
            "checkpoints": {"confirm_steps": 2, "keep_last": 20, "keep_healthy": 20}},
    }
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    return cfg_path


def _env(trace: Path) -> dict:
    # Reward call 8 (of attempt 0) returns NaN on every rank: the step-8 fault.
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RLGUARD_TEST_TRACE=str(trace),
                RLGUARD_TEST_NAN_CALL="8")


def _rlguard_run(cfg_path: Path, run_dir: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlguard.orchestrator.cli", "run", str(cfg_path), "--out", str(run_dir),
                           "-q"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def _check_one_run_two_ranks(run_dir: Path, trace: Path, steps: int) -> None:
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    decided = next(e for e in journal if e["kind"] == "decision" and e["phase"] == "decided")
    assert decided["decision"]["action"] == "rollback"
    target = decided["decision"]["target_step"]
    assert [e["state"] for e in journal if e["kind"] == "state"][-1] == "completed"

    traces = [_trace(trace / f"rank{r}.jsonl") for r in range(2)]
    r0, r1 = ([e for e in t if "step" in e] for t in traces)
    # Same steps, same attempts, same constraint values, identical weights: one run, two ranks.
    assert [(e["step"], e["attempt"], e["kl_coef"]) for e in r0] == [(e["step"], e["attempt"], e["kl_coef"])
                                                                     for e in r1]
    assert [e["params"] for e in r0] == [e["params"] for e in r1]
    first = {e["step"]: e["params"] for e in r0 if e["attempt"] == 0}
    assert first[8] == first[7]  # the NaN step's update was skipped on both ranks alike
    # Every rank restored the target checkpoint's weights (those it traced at that step).
    for t in traces:
        loads = [e for e in t if "loaded" in e]
        assert [e["loaded"] for e in loads] == [target] and loads[0]["params"] == first[target]
    after = [e for e in r0 if e["attempt"] >= 1]
    assert after and after[0]["step"] == target + 1 and after[-1]["step"] == steps
    assert after[0]["kl_coef"] > 0.05  # the tightened constraint reached every rank
    assert (run_dir / "checkpoints" / f"step-{steps:06d}" / "rng_rank1.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("rollback_mode", ["in_process", "restart"])
def test_two_rank_torchrun_fault_is_rolled_back_on_every_rank_and_completes(tmp_path, rollback_mode):
    trace = tmp_path / "trace"
    trace.mkdir()
    cfg = _run_config(tmp_path, 14, ["--nproc_per_node", "2", "--standalone"], rollback_mode)
    r = _rlguard_run(cfg, tmp_path / "run", _env(trace))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    _check_one_run_two_ranks(tmp_path / "run", trace, 14)


@pytest.mark.slow
def test_two_nodes_on_localhost_via_static_rendezvous_under_the_supervisor(tmp_path):
    """docs/DISTRIBUTED.md's multi-node recipe with two "nodes" on 127.0.0.1: the supervisor
    launches node 0's torchrun; node 1's torchrun is started beside it (as a cluster scheduler
    would). Static rendezvous (--node-rank + --master-addr/port) puts global rank 0, the one
    that talks to the supervisor, on node 0; c10d assigns ranks in arrival order."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rdzv = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "static", "--master-addr", "127.0.0.1",
            "--master-port", str(port)]
    trace = tmp_path / "trace"
    trace.mkdir()
    cfg = _run_config(tmp_path, 14, [*rdzv, "--node-rank", "0"], "in_process")
    env = _env(trace)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    node1 = subprocess.Popen([torchrun, *rdzv, "--node-rank", "1", "-m", "tests.orchestrator.test_torchrun_ppo",
                              "--config", str(cfg), "--run-dir", str(tmp_path / "run")],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        r = _rlguard_run(cfg, tmp_path / "run", env)
        _, node1_err = node1.communicate(timeout=120)
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.wait()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert node1.returncode == 0, node1_err[-3000:]
    _check_one_run_two_ranks(tmp_path / "run", trace, 14)


if __name__ == "__main__":
    sys.exit(traced_main())
