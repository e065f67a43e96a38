"""run_training (what `rlguard train` runs): the run directory a supervisor and replay read."""

import json

import torch

from rlguard.monitors.events import parse_event_line
from rlguard.ppo.checkpoint_files import list_checkpoints, verify_checkpoint
from rlguard.ppo.cli import run_training
from rlguard.ppo.config import load_train_config
from tests.ppo.ppo_helpers import fast_overrides, tiny_lm


def test_run_directory_has_events_samples_checkpoints_and_config(tmp_path_factory, tmp_path):
    torch.set_num_threads(1)
    lm = tiny_lm(tmp_path_factory)
    cfg = load_train_config(None, fast_overrides(lm, steps=5, checkpoint_every=2, eval_every=2, keep_samples=2))
    seen = []
    trainer = run_training(cfg, tmp_path, on_step=lambda step, m: seen.append((step, m["reward"])), progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    events = [parse_event_line(line, i + 1) for i, line in enumerate(lines)]
    assert [e.step for e in events] == [1, 2, 3, 4, 5] == [s for s, _ in seen]
    assert all(e.time is not None for e in events)
    assert [("eval_reward" in e.metrics) for e in events] == [False, True, False, True, False]
    assert [e.metrics["reward"] for e in events] == [r for _, r in seen]
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000002", "step-000004", "step-000005"]
    for p in ckpts:
        assert verify_checkpoint(p)["step"] == int(p.name[5:])
    assert "eval_reward" in verify_checkpoint(ckpts[1])["metrics"]
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    # samples.jsonl has every sample, however few recent_samples keeps in memory.
    assert len(samples) == 5 * cfg.batch_size and {s["step"] for s in samples} == {1, 2, 3, 4, 5}
    assert trainer.recent_samples == samples[-2:]
    again = load_train_config(tmp_path / "config.yaml", [])
    assert again.resolved() == trainer.cfg
