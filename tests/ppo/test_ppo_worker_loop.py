"""The built-in worker's loop, standalone (no supervisor): every sample of every step reaches
samples.jsonl, and a checkpoint that cannot be written is reported without stopping training."""

import json
import os
import subprocess
import sys

from tests.ppo.ppo_helpers import REPO, fast_overrides, tiny_lm


def _worker(run_dir, overrides):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in [k for k in env if k.startswith("RLGUARD_")]:
        env.pop(key)
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "rlguard.orchestrator.ppo_worker", "--run-dir", str(run_dir), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_all_samples_are_kept_and_a_failed_async_checkpoint_does_not_stop_training(tmp_path_factory, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint directory should be: every write fails")
    r = _worker(run_dir, fast_overrides(tiny_lm(tmp_path_factory), steps=3, batch_size=4, keep_samples=1,
                                        checkpoint_every=1, critic_pretrain_steps=0))
    assert r.returncode == 0, r.stderr[-3000:]
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4 + [3] * 4  # keep_samples=1 loses none
    # the starting state (step 0, checkpoint_start) and step 1 both failed; training went on
    assert "checkpoint of step 0" in r.stderr and "checkpoint of step 1" in r.stderr
    assert "training continues" in r.stderr
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == [1, 2, 3]
    assert events[0]["metrics"].get("checkpoint_failures", 0.0) <= 1.0  # step 1's own write comes after its report
    assert events[2]["metrics"]["checkpoint_failures"] >= 2.0  # reported with a later step
