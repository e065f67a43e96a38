"""The checkpoint registry on real checkpoint directories: health, retention, corruption, persistence."""

from __future__ import annotations

import json
import shutil

import pytest

from rlguard.monitors.alerts import Alert, Severity
from rlguard.orchestrator.journal import Journal
from rlguard.orchestrator.registry import CheckpointRegistry, RegistryConfig, RegistryError
from rlguard.policies.view import Health
from rlguard.ppo.checkpoint_files import checkpoint_dir_name, list_checkpoints, write_checkpoint_dir


def write(root, step: int):
    def files(d):
        (d / "policy.safetensors").write_bytes(bytes([step % 256]) * 64)
        (d / "state.json").write_text(json.dumps({"step": step}))

    return write_checkpoint_dir(
        root / checkpoint_dir_name(step), files, step=step, constraints={"kl_coef": 0.05}
    )


def alert(step: int, onset: int, severity=Severity.WARNING) -> Alert:
    return Alert("spike", "kl_spike", "kl", step, severity, onset, "kl = 0.3")


def quiet(reg: CheckpointRegistry, steps) -> None:
    for s in steps:
        reg.observe(s, [])


def on_disk(root) -> list[int]:
    return [int(p.name[5:]) for p in list_checkpoints(root)]


def test_pending_becomes_healthy_after_an_alert_free_window_or_suspect(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=5, keep_last=10))
    change = reg.add(10, write(tmp_path, 10))
    assert reg.get(10).health is Health.PENDING and reg.get(10).constraints == {"kl_coef": 0.05}
    assert change.health == [(10, Health.PENDING, Health.PENDING)]
    quiet(reg, range(11, 15))
    assert reg.get(10).health is Health.PENDING
    assert reg.observe(15, []).health == [(10, Health.PENDING, Health.HEALTHY)]
    reg.add(20, write(tmp_path, 20))
    change = reg.observe(23, [alert(23, onset=21)])
    assert change.health == [(20, Health.PENDING, Health.SUSPECT)]
    assert reg.get(20).note == "spike on kl at step 23 with onset 21"
    # A late detection with an early onset demotes an already healthy checkpoint too.
    assert reg.observe(40, [alert(40, onset=14)]).health == [(10, Health.HEALTHY, Health.SUSPECT)]
    assert [v.health for v in reg.views()] == [Health.SUSPECT, Health.SUSPECT]


def test_warnings_can_be_excluded_from_suspicion(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=5, suspect_min_severity="critical"))
    reg.add(10, write(tmp_path, 10))
    reg.observe(12, [alert(12, onset=12)])
    assert reg.get(10).health is Health.PENDING
    reg.observe(13, [alert(13, onset=12, severity=Severity.CRITICAL)])
    assert reg.get(10).health is Health.SUSPECT


def test_retention_keeps_newest_last_healthy_pending_and_pinned(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=5, keep_last=2, keep_healthy=1))
    pruned = []
    for step in (10, 20, 30, 40, 50, 60):
        pruned += reg.add(step, write(tmp_path, step)).pruned
        if step == 20:
            reg.pin(20)
        if step <= 30:
            quiet(reg, range(step + 1, step + 6))  # 10, 20, 30 become healthy
        else:
            pruned += reg.observe(step + 1, [alert(step + 1, onset=step + 1)]).pruned  # 40, 50, 60 suspect
    # 10: healthy but superseded; 40: suspect and not among the newest 2.
    assert sorted(pruned) == [10, 40]
    assert on_disk(tmp_path) == [20, 30, 50, 60]
    assert [e.step for e in reg.entries()] == [20, 30, 50, 60]
    assert reg.last_healthy().step == 30
    assert not list(tmp_path.glob(".trash-*"))
    with pytest.raises(RegistryError, match="known steps: 20, 30, 50, 60"):
        reg.pin(10)


def test_corrupt_checkpoint_is_skipped_for_the_previous_healthy_one(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=0, keep_last=5))
    for step in (10, 20, 30):
        reg.add(step, write(tmp_path, step))
    reg.observe(30, [])
    assert all(e.health is Health.HEALTHY for e in reg.entries())
    blob = tmp_path / checkpoint_dir_name(20) / "policy.safetensors"
    blob.write_bytes(b"\x00" * 64)  # same size, flipped bits
    assert reg.rollback_target(31).step == 30
    target = reg.rollback_target(25)
    assert target.step == 10
    assert reg.get(20).health is Health.CORRUPT and "sha256 does not match" in reg.get(20).note
    (a,) = reg.take_corruption_alerts()
    assert (a.code, a.step, a.severity) == ("checkpoint_corrupt", 20, Severity.CRITICAL)
    assert reg.take_corruption_alerts() == []
    (tmp_path / checkpoint_dir_name(10) / "state.json").unlink()
    assert reg.rollback_target(25) is None and reg.get(10).health is Health.CORRUPT


def test_state_survives_reopen_and_is_reconciled_with_disk(tmp_path):
    cfg = RegistryConfig(confirm_steps=2, keep_last=10)
    reg = CheckpointRegistry.open(tmp_path, cfg)
    for step in (10, 20):
        reg.add(step, write(tmp_path, step))
    quiet(reg, range(11, 13))
    reg.pin(20)
    write(tmp_path, 30)  # written by a worker while the supervisor was down
    shutil.rmtree(tmp_path / checkpoint_dir_name(20))
    again = CheckpointRegistry.open(tmp_path, cfg)
    assert [(e.step, e.health) for e in again.entries()] == [(10, Health.HEALTHY), (30, Health.PENDING)]
    assert any("step 20 is gone" in p for p in again.problems)
    data = json.loads((tmp_path / "registry.json").read_text())
    assert data["format"] == "rlguard-registry/1" and [e["step"] for e in data["entries"]] == [10, 30]


def test_rebuild_from_directories_and_journal_when_registry_json_is_lost(tmp_path):
    run = tmp_path
    ckpts = run / "checkpoints"
    with Journal(run / "journal.jsonl") as j:
        for step, health in (
            (10, "pending"),
            (20, "pending"),
            (10, "healthy"),
            (20, "suspect"),
            (30, "pending"),
        ):
            if health == "pending":
                write(ckpts, step)
            j.checkpoint(step, ckpts / checkpoint_dir_name(step), health)
        entries = j.entries()
    (ckpts / "registry.json").write_text("{ truncated")
    reg = CheckpointRegistry.open(ckpts, journal_entries=entries)
    assert [(e.step, e.health) for e in reg.entries()] == [
        (10, Health.HEALTHY),
        (20, Health.SUSPECT),
        (30, Health.PENDING),
    ]
    assert "unreadable" in reg.problems[0]
    assert CheckpointRegistry.rebuild(ckpts, journal_entries=entries).views() == reg.views()


def test_rollback_abandons_unconfirmed_later_checkpoints_and_bad_adds_are_refused(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=50, keep_last=10))
    for step in (10, 20, 30):
        reg.add(step, write(tmp_path, step))
    change = reg.note_rollback(10)
    assert change.health == [(20, Health.PENDING, Health.SUSPECT), (30, Health.PENDING, Health.SUSPECT)]
    assert reg.get(20).note == "abandoned by the rollback to step 10"
    reg.add(20, write(tmp_path, 20))  # the new timeline writes step 20 again
    assert reg.get(20).health is Health.PENDING
    with pytest.raises(RegistryError, match="does not exist"):
        reg.add(99)
    with pytest.raises(RegistryError, match="not directly under"):
        reg.add(5, tmp_path / "elsewhere" / "step-000005")


def test_the_checkpoint_handed_out_for_a_rollback_is_not_pruned_while_in_use(tmp_path):
    cfg = RegistryConfig(confirm_steps=0, keep_last=1, keep_healthy=1)
    reg = CheckpointRegistry.open(tmp_path, cfg)
    reg.add(10, write(tmp_path, 10))
    reg.observe(10, [])
    assert reg.rollback_target(11).step == 10
    for step in (20, 30):
        reg.add(step, write(tmp_path, step))
        reg.observe(step, [])
    assert on_disk(tmp_path) == [10, 30]
    # The choice survives a supervisor restart (registry.json), and moves with the next rollback.
    reopened = CheckpointRegistry.open(tmp_path, cfg)
    assert reopened.rollback_target(31).step == 30
    assert reopened.prune() == [10] and on_disk(tmp_path) == [30]


def test_the_step_an_in_process_rollback_restored_is_kept_like_a_handed_out_target(tmp_path):
    """The in-process path picks its target without rollback_target (the worker verifies); the
    restored step is the base of the new timeline and must survive retention all the same."""
    cfg = RegistryConfig(confirm_steps=0, keep_last=1, keep_healthy=1)
    reg = CheckpointRegistry.open(tmp_path, cfg)
    reg.add(0, write(tmp_path, 0))
    reg.observe(0, [])
    reg.use(0)
    for step in (2, 4, 6):
        reg.add(step, write(tmp_path, step))
        reg.observe(step, [])
    assert on_disk(tmp_path) == [0, 6]
    assert CheckpointRegistry.open(tmp_path, cfg).prune() == []  # survives a supervisor restart
    reg.use(6)  # the next rollback moves the base
    assert reg.prune() == [0]
    reg.use(99)  # not a known checkpoint: nothing to keep, nothing changes
    assert reg.prune() == [] and on_disk(tmp_path) == [6]


def test_a_stall_says_nothing_about_checkpoint_health(tmp_path):
    reg = CheckpointRegistry.open(tmp_path, RegistryConfig(confirm_steps=5))
    reg.add(10, write(tmp_path, 10))
    stall = Alert("stall", "stall", "", 12, Severity.CRITICAL, 12, "no event for 900 s")
    assert not reg.observe(12, [stall])
    assert reg.observe(15, []).health == [(10, Health.PENDING, Health.HEALTHY)]


def test_a_checkpoint_written_again_behind_the_registrys_back_is_pending_again(tmp_path):
    cfg = RegistryConfig(confirm_steps=0)
    reg = CheckpointRegistry.open(tmp_path, cfg)
    reg.add(10, write(tmp_path, 10))
    reg.observe(10, [])
    assert reg.get(10).health is Health.HEALTHY
    write(tmp_path, 10)  # after a rollback the worker wrote step 10 again; the supervisor died before add()
    again = CheckpointRegistry.open(tmp_path, cfg)
    assert again.get(10).health is Health.PENDING
    assert any("written again" in p for p in again.problems)


def test_a_held_rollback_target_is_never_pruned_and_only_demoted_by_an_earlier_onset(tmp_path):
    # The demo's failure: target 2 demoted by an alert with onset 3 (<= 2 + confirm window), then
    # pruned by keep_last=2 while the worker was loading it.
    cfg = RegistryConfig(confirm_steps=1, keep_last=2, keep_healthy=1)
    reg = CheckpointRegistry.open(tmp_path, cfg)
    for step in (1, 2):
        reg.add(step, write(tmp_path, step))
        reg.observe(step + 1, [])
    assert reg.get(2).health is Health.HEALTHY
    reg.hold(2)
    for step in (3, 4, 5, 6):
        reg.add(step, write(tmp_path, step))
    change = reg.observe(6, [alert(6, onset=3, severity=Severity.CRITICAL)])
    assert reg.get(2).health is Health.HEALTHY and 2 not in [s for s, _, _ in change.health]
    assert (3, Health.PENDING, Health.SUSPECT) in change.health  # not held: the usual confirm window applies
    assert 3 in change.pruned and 2 not in change.pruned and 2 in on_disk(tmp_path)
    # held survives a supervisor restart
    reopened = CheckpointRegistry.open(tmp_path, cfg)
    assert reopened.held == {2} and reopened.prune() == [] and 2 in on_disk(tmp_path)
    # an alert whose regime began at or before the target's own step still demotes it
    reopened.observe(7, [alert(7, onset=2, severity=Severity.CRITICAL)])
    assert reopened.get(2).health is Health.SUSPECT and 2 in on_disk(tmp_path)
    # once the rollback is over, retention applies again
    pruned = reopened.release(2)
    assert 2 in pruned and 2 not in on_disk(tmp_path) and reopened.held == set()


def test_a_name_in_registry_json_never_points_outside_checkpoints(tmp_path):
    """registry.json is a file on disk like any other: its `name` could say ../../somewhere.
    The directory of a checkpoint is derived from its step, never taken from the file."""
    root = tmp_path / "checkpoints"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    reg = CheckpointRegistry.open(root, RegistryConfig(keep_last=10))
    reg.add(5, write(root, 5))
    reg.save()
    data = json.loads((root / "registry.json").read_text())
    data["entries"][0]["name"] = "../elsewhere"
    (root / "registry.json").write_text(json.dumps(data))
    reg = CheckpointRegistry.open(root, RegistryConfig(keep_last=10))
    assert reg.path_of(reg.get(5)) == root / "step-000005"
    assert json.loads((root / "registry.json").read_text())["entries"][0]["name"] == "step-000005"
    # from the journal too
    journal = [{"kind": "checkpoint", "step": 5, "path": str(outside), "health": "healthy", "time": 0}]
    reg = CheckpointRegistry.rebuild(root, RegistryConfig(keep_last=10), journal_entries=journal)
    assert reg.path_of(reg.get(5)) == root / "step-000005"
    assert outside.is_dir()
