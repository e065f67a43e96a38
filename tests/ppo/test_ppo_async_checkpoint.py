"""Asynchronous checkpoints: a snapshot written on a thread is the synchronous checkpoint,
byte for byte, even when training moved on before the write started; failures are reported,
never raised into the loop."""

import threading

import pytest
import torch

from rlguard.ppo.async_checkpoint import AsyncCheckpointWriter
from rlguard.ppo.checkpoint_files import read_manifest, verify_checkpoint
from rlguard.ppo.config import load_train_config
from rlguard.ppo.trainer import PPOTrainer
from tests.ppo.ppo_helpers import tiny_lm


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    lm = tiny_lm(tmp_path_factory)
    from tests.ppo.ppo_helpers import fast_overrides

    t = PPOTrainer(load_train_config(None, fast_overrides(lm, critic_pretrain_steps=0)))
    t.train_step()
    return t


def _files(ckpt):
    return read_manifest(ckpt)["files"]  # name -> sha256 and size of every payload file


def test_async_snapshot_equals_a_synchronous_save_even_after_training_moved_on(trainer, tmp_path):
    sync_dir = trainer.save_checkpoint(tmp_path / "sync")
    snapshot = trainer.checkpoint_snapshot()
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train_step()  # the live weights, optimizer state and cursor change after the snapshot
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())

    done = []
    writer = AsyncCheckpointWriter(on_done=lambda step, path: done.append((step, path)))
    writer.submit(snapshot, tmp_path / "async")
    assert writer.wait(timeout=120)
    assert done == [(snapshot.step, tmp_path / "async")] and writer.failures == 0
    verify_checkpoint(tmp_path / "async")
    assert _files(tmp_path / "async") == _files(sync_dir)


def test_training_keeps_stepping_while_a_write_is_in_flight(trainer, tmp_path):
    release = threading.Event()
    started = threading.Event()
    snapshot = trainer.checkpoint_snapshot()
    real_write = snapshot.write

    def slow_write(path):  # hold the writer thread until the loop has taken two more steps
        started.set()
        release.wait(60)
        return real_write(path)

    snapshot.write = slow_write
    done = []
    writer = AsyncCheckpointWriter(on_done=lambda step, path: done.append(step))
    step0 = trainer.step
    writer.submit(snapshot, tmp_path / "ckpt")
    assert started.wait(30) and writer.busy
    trainer.train_step()
    trainer.train_step()
    assert trainer.step == step0 + 2 and writer.busy and not done  # not announced before it is complete
    release.set()
    assert writer.wait(timeout=120) and done == [step0]
    assert verify_checkpoint(tmp_path / "ckpt")["step"] == step0


def test_a_second_request_waits_for_the_first_and_both_are_written(trainer, tmp_path):
    writer = AsyncCheckpointWriter()
    writer.submit(trainer.checkpoint_snapshot(), tmp_path / "a")
    writer.submit(trainer.checkpoint_snapshot(), tmp_path / "b")
    assert writer.wait(timeout=120) and writer.written == 2
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_a_failed_write_is_reported_and_training_continues(trainer, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint root should be")
    errors = []
    writer = AsyncCheckpointWriter(on_error=lambda step, path, exc: errors.append((step, type(exc))))
    writer.submit(trainer.checkpoint_snapshot(), blocker / "step-000001")
    assert writer.wait(timeout=120)
    assert writer.failures == 1 and errors and issubclass(errors[0][1], OSError)
    assert "not-a-dir" in writer.last_error or "Not a directory" in writer.last_error
    assert not list(tmp_path.glob(".tmp-*"))
    trainer.train_step()  # the trainer is untouched by the failure


def test_an_async_checkpoint_resumes_like_a_synchronous_one(trainer, tmp_path):
    writer = AsyncCheckpointWriter()
    writer.submit(trainer.checkpoint_snapshot(), tmp_path / "async")
    assert writer.wait(timeout=120)
    expected = trainer.train_step()
    trainer.load_checkpoint(tmp_path / "async")
    again = trainer.train_step()
    for key in ("reward", "kl", "policy_loss", "value_loss"):
        assert again[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key


def test_reused_snapshot_memory_never_overwrites_a_snapshot_still_held(trainer):
    held = []
    for _ in range(3):  # more live snapshots than pooled buffer sets
        s = trainer.checkpoint_snapshot()
        held.append((s, {k: v.clone() for k, v in s.tensors["policy"].items()}))
        trainer.train_step()
    for s, copy in held:
        assert all(torch.equal(s.tensors["policy"][k], v) for k, v in copy.items())
    assert not all(torch.equal(held[0][1][k], v) for k, v in held[2][1].items())  # training did move
    del held, s
    import gc

    gc.collect()
    again = trainer.checkpoint_snapshot()  # buffers are free again: reused, and correct
    live = {k: v.detach() for k, v in trainer.policy.named_parameters() if v.requires_grad}
    assert all(torch.equal(again.tensors["policy"][k], live[k]) for k in live)
