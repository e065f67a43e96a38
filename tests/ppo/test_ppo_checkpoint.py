"""Checkpoints: full state, no pickle, exact resume in a new process, corrupt ones refused."""

import json
import math
import shutil

import pytest
import torch

from rlguard.ppo.checkpoint_files import CheckpointError, read_manifest
from rlguard.ppo.config import load_train_config
from rlguard.ppo.trainer import PPOTrainer
from tests.ppo.ppo_helpers import fast_overrides, run_cli, tiny_lm


def _volatile(name: str) -> bool:
    """Wall-clock figures, the only metrics allowed to differ between two identical runs."""
    return name.endswith("_seconds") or name == "tokens_per_second"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_lm(tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint(lm, tmp_path_factory):
    t = PPOTrainer(load_train_config(None, fast_overrides(lm, critic_pretrain_steps=1)))
    t.train_step()
    t.set_constraints(kl_coef=0.3)
    return t.save_checkpoint(tmp_path_factory.mktemp("ck") / "step-000001")


def _events(path):
    return {e["step"]: e["metrics"] for e in map(json.loads, path.read_text().splitlines())}


def test_resume_in_a_new_process_reproduces_the_uninterrupted_run(lm, tmp_path):
    from rlguard.ppo.cli import run_training

    overrides = fast_overrides(lm, steps=4, checkpoint_every=2, eval_every=2, critic_pretrain_steps=1)
    # 4 steps in this process; 2 steps in this process, then a NEW process resumes for 2 more.
    run_training(load_train_config(None, overrides), tmp_path / "full", progress=False)
    run_training(load_train_config(None, [*overrides, "steps=2"]), tmp_path / "half", progress=False)
    ckpt = tmp_path / "half" / "checkpoints" / "step-000002"
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    resumed = run_cli(["train", *sets, "--resume", str(ckpt), "--out", str(tmp_path / "half"), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = _events(tmp_path / "full" / "metrics.jsonl"), _events(tmp_path / "half" / "metrics.jsonl")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert set(a[step]) == set(b[step])
        for k, v in a[step].items():
            if not _volatile(k):
                assert math.isclose(v, b[step][k], rel_tol=1e-6, abs_tol=1e-9), (step, k, v, b[step][k])
    assert "eval_reward" in b[4]
    # The samples of the resumed steps are the same text.
    sa = [json.loads(x) for x in (tmp_path / "full" / "samples.jsonl").read_text().splitlines()]
    sb = [json.loads(x) for x in (tmp_path / "half" / "samples.jsonl").read_text().splitlines()]
    assert sa == sb


def test_checkpoint_holds_the_full_state_without_pickle(checkpoint, lm):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"manifest.json", "policy.safetensors", "critic.safetensors", "policy_optimizer.safetensors",
            "policy_optimizer.json", "critic_optimizer.safetensors", "critic_optimizer.json", "rng.safetensors",
            "trainer_state.json", "config.json"} <= names
    assert all(p.suffix in (".json", ".safetensors") for p in checkpoint.iterdir())
    manifest = read_manifest(checkpoint)
    assert manifest["step"] == 1 and manifest["constraints"]["kl_coef"] == 0.3
    assert "reward" in manifest["metrics"]
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["reward_stats"]["count"] == 4 and state["cursor"]["position"] == 4
    # Loading restores step, constraints and the normalizer into a fresh trainer.
    t = PPOTrainer(load_train_config(None, fast_overrides(lm, critic_pretrain_steps=1)))
    t.load_checkpoint(checkpoint)
    assert t.step == 1 and t.constraints()["kl_coef"] == 0.3 and t.reward_stats.count == 4
    assert t.train_step()["kl_coef"] == 0.3


def _corrupt_copies(checkpoint, tmp_path):
    flipped = shutil.copytree(checkpoint, tmp_path / "flip")
    data = bytearray((flipped / "policy.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / "policy.safetensors").write_bytes(bytes(data))
    truncated = shutil.copytree(checkpoint, tmp_path / "trunc")
    blob = (truncated / "critic_optimizer.safetensors").read_bytes()
    (truncated / "critic_optimizer.safetensors").write_bytes(blob[: len(blob) // 2])
    no_manifest = shutil.copytree(checkpoint, tmp_path / "nomanifest")
    (no_manifest / "manifest.json").unlink()
    return [(flipped, "policy.safetensors", "sha256"), (truncated, "critic_optimizer.safetensors", "truncated"),
            (no_manifest, "manifest.json", "missing")]


def test_corrupt_checkpoints_are_refused_before_anything_is_loaded(checkpoint, lm, tmp_path):
    t = PPOTrainer(load_train_config(None, fast_overrides(lm)))
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    for path, filename, reason in _corrupt_copies(checkpoint, tmp_path):
        with pytest.raises(CheckpointError) as e:
            t.load_checkpoint(path)
        assert filename in str(e.value) and reason in str(e.value)
    assert t.step == 0
    assert all(torch.equal(p, before[n]) for n, p in t.policy.named_parameters())


def test_resume_with_another_model_is_refused(checkpoint, tmp_path_factory):
    from rlguard.ppo.tiny import build_tiny_lm

    other = build_tiny_lm(tmp_path_factory.mktemp("other"), seed=3)
    t = PPOTrainer(load_train_config(None, fast_overrides(other)))
    with pytest.raises(CheckpointError, match="resume with the same model"):
        t.load_checkpoint(checkpoint)


def test_cli_reports_a_corrupt_checkpoint_with_exit_2(checkpoint, lm, tmp_path, capsys):
    from rlguard.orchestrator.cli import main

    bad = shutil.copytree(checkpoint, tmp_path / "bad")
    (bad / "manifest.json").unlink()
    sets = []
    for kv in fast_overrides(lm, steps=2):
        sets += ["--set", kv]
    assert main(["train", *sets, "--resume", str(bad), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "manifest.json is missing" in err and err.count("\n") == 1


def test_resume_keeps_saved_constraints_unless_new_ones_are_given(checkpoint, lm, tmp_path):
    from rlguard.ppo.cli import run_training

    cfg = load_train_config(None, fast_overrides(lm, steps=2, critic_pretrain_steps=1))
    kept = run_training(cfg, tmp_path / "kept", resume=checkpoint, progress=False)
    assert kept.last_metrics["kl_coef"] == 0.3  # the tightened value saved in the checkpoint
    new = run_training(cfg, tmp_path / "new", resume=checkpoint, constraints={"kl_coef": 0.01}, progress=False)
    assert new.last_metrics["kl_coef"] == 0.01
    events = [json.loads(x) for x in (tmp_path / "new" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == [2]  # continues after the checkpoint's step 1


def test_a_listed_and_hashed_file_that_is_not_safetensors_is_a_checkpoint_error(checkpoint, lm, tmp_path):
    """The manifest's hashes only prove the bytes are the ones written: bytes that are not a
    safetensors file (a writer bug, a hand-edited manifest) are a CheckpointError naming the file,
    not a SafetensorError crash."""
    from rlguard.ppo.checkpoint_files import sha256_file

    bad = shutil.copytree(checkpoint, tmp_path / "step-000001")
    (bad / "policy.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["policy.safetensors"] = {"sha256": sha256_file(bad / "policy.safetensors"),
                                               "bytes": (bad / "policy.safetensors").stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(manifest))
    t = PPOTrainer(load_train_config(None, fast_overrides(lm)))
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: not a readable safetensors file"):
        t.load_checkpoint(bad)
    assert t.step == 0
