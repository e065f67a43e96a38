"""Checkpoint directories that lie: files the manifest does not list, a step that is not the
directory's, and a crash between the two renames of a replaced step. No torch here."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rlguard.ppo.checkpoint_files import (
    CheckpointError,
    checkpoint_dir_name,
    recover_interrupted_replace,
    sha256_file,
    verify_checkpoint,
    write_checkpoint_dir,
)


def _write(root, step: int, payload: bytes = b"tensor bytes"):
    def files(d):
        (d / "policy.safetensors").write_bytes(payload)
        (d / "trainer_state.json").write_text(json.dumps({"step": step}))

    return write_checkpoint_dir(root / checkpoint_dir_name(step), files, step=step)


def _edit_manifest(ckpt, **changes):
    m = json.loads((ckpt / "manifest.json").read_text())
    m.update(changes)
    (ckpt / "manifest.json").write_text(json.dumps(m))


def test_a_file_the_manifest_does_not_list_fails_verification(tmp_path):
    ckpt = _write(tmp_path, 5)
    (ckpt / "policy.safetensors").write_bytes(b"garbage, not safetensors")
    _edit_manifest(ckpt, files={})  # an emptied manifest: nothing to check, everything loaded unchecked
    with pytest.raises(CheckpointError, match=r"policy\.safetensors: file not listed in manifest\.json"):
        verify_checkpoint(ckpt)
    ckpt6 = _write(tmp_path, 6)
    (ckpt6 / "sub").mkdir()
    (ckpt6 / "sub" / "extra.json").write_text("{}")  # added after writing, in a subdirectory
    with pytest.raises(CheckpointError, match=r"extra\.json: file not listed"):
        verify_checkpoint(ckpt6)
    ckpt7 = _write(tmp_path, 7)
    _edit_manifest(ckpt7, files={"policy.safetensors": "not an object"})
    with pytest.raises(CheckpointError, match="manifest.json: the entry of 'policy.safetensors'"):
        verify_checkpoint(ckpt7)


def test_the_manifest_step_must_be_the_directorys(tmp_path):
    ckpt = _write(tmp_path, 5)
    _edit_manifest(ckpt, step=999)
    with pytest.raises(CheckpointError, match=r"manifest\.json: says step 999 but the directory is step-000005"):
        verify_checkpoint(ckpt)
    _edit_manifest(ckpt, step="5")
    with pytest.raises(CheckpointError, match="'step' must be an integer"):
        verify_checkpoint(ckpt)
    assert verify_checkpoint(_write(tmp_path, 8))["step"] == 8


def _crash_between_the_renames(root, step: int):
    """The state write_checkpoint_dir leaves when killed after renaming step-N away and before
    renaming the new copy into place: built with the function's own steps."""
    old = _write(root, step, b"old weights")
    new = _write(root / "staging", step, b"new weights")
    os.rename(old, root / f".old-{old.name}-111")
    os.rename(new, root / f".tmp-{old.name}-4242-222")
    shutil.rmtree(root / "staging")
    return root / old.name


def test_a_crash_between_the_two_renames_promotes_the_complete_new_copy(tmp_path):
    final = _crash_between_the_renames(tmp_path, 5)
    assert not final.exists()
    assert recover_interrupted_replace(tmp_path) == [".tmp-step-000005-4242-222 -> step-000005"]
    assert (final / "policy.safetensors").read_bytes() == b"new weights"
    assert verify_checkpoint(final)["step"] == 5


def test_a_torn_new_copy_falls_back_to_the_old_one(tmp_path):
    final = _crash_between_the_renames(tmp_path, 5)
    torn = tmp_path / ".tmp-step-000005-4242-222"
    (torn / "policy.safetensors").write_bytes(b"new wei")  # the sha256 no longer matches
    assert recover_interrupted_replace(tmp_path) == [".old-step-000005-111 -> step-000005"]
    assert (final / "policy.safetensors").read_bytes() == b"old weights"


def test_run_files_cleanup_keeps_the_checkpoint_a_crash_left_in_temp_names(tmp_path):
    from rlguard.orchestrator.run_files import RunFiles

    files = RunFiles(tmp_path / "run")
    final = _crash_between_the_renames(files.checkpoints_dir, 5)
    (files.checkpoints_dir / ".tmp-step-000010-99-1").mkdir()  # a torn write of another step
    removed = files.remove_partial_checkpoints()
    assert verify_checkpoint(final)["step"] == 5
    assert (final / "policy.safetensors").read_bytes() == b"new weights"
    assert sorted(removed) == [".old-step-000005-111", ".tmp-step-000010-99-1"]
    assert sorted(p.name for p in files.checkpoints_dir.iterdir()) == ["step-000005"]
    assert sha256_file(final / "policy.safetensors")
