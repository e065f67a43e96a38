"""Checkpoints damaged on disk behind the supervisor's back: truncated or bit-flipped files.

The newest healthy checkpoints are damaged, then the worker is killed so that the
supervisor must pick a checkpoint to relaunch from. It must skip the damaged ones with an
alert (journal: alert checkpoint_corrupt + checkpoint health corrupt) and relaunch from the newest intact healthy one; the worker never loads a damaged one.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from rlguard.orchestrator.spec import parse_run_config
from rlguard.orchestrator.state import RunState
from rlguard.orchestrator.supervisor import Supervisor
from rlguard.policies.view import Health
from tests.reliability.chaos_lib import (
    check_run,
    join_supervisor,
    read_jsonl,
    record,
    run_config,
    run_in_thread,
    wait_for,
)


def damage(path, how: str) -> None:
    f = path / "weights.bin"
    data = f.read_bytes()
    if how == "truncate":
        f.write_bytes(data[: len(data) // 3])
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01  # one bit: same size, only the checksum can tell
        f.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_damaged_checkpoints_are_skipped_with_an_alert_and_the_previous_healthy_one_used(tmp_path, how):
    run_dir = tmp_path / "run"
    scenario = {"steps": 40, "checkpoint_every": 2, "step_s": 0.05, "ckpt_bytes": 256 << 10}
    cfg = parse_run_config(run_config(tmp_path, scenario, supervisor={"checkpoints": {
        "confirm_steps": 2, "keep_last": 20, "keep_healthy": 20}}))
    sup = Supervisor(run_dir, cfg, scheduler=False)
    thread, box = run_in_thread(sup)
    try:
        healthy = wait_for(lambda: (lambda h: h if len(h) >= 4 else None)(
            [e for e in sup.registry.entries() if e.health is Health.HEALTHY]), 60, "four healthy checkpoints")
        damaged = healthy[-2:]
        for e in damaged:
            damage(sup.registry.path_of(e), how)
        w = sup.live.worker
        os.killpg(w.pgid, signal.SIGKILL)
        result = join_supervisor(sup, thread, box, 120)
    finally:
        if thread.is_alive():
            sup.detach("test cleanup")
    damaged_steps = {e.step for e in damaged}
    journal = read_jsonl(run_dir / "journal.jsonl")
    relaunch = [e for e in journal if e.get("event") == "launch"][1]
    resumed_step = int(relaunch["resume"].rsplit("-", 1)[1])
    counts, findings = check_run(run_dir)
    corrupt_alerts = {e["alert"]["step"] for e in journal if e["kind"] == "alert"
                      and e["alert"]["code"] == "checkpoint_corrupt"}
    corrupt_health = {e["step"] for e in journal if e["kind"] == "checkpoint" and e["health"] == "corrupt"}
    registry = json.loads((run_dir / "checkpoints" / "registry.json").read_text())
    registry_corrupt = {e["step"] for e in registry["entries"] if e["health"] == "corrupt"}
    skipped_ok = resumed_step not in damaged_steps and (resumed_step > max(damaged_steps) or
                                                       damaged_steps <= corrupt_alerts & corrupt_health)
    record(f"checkpoint_{how}", kind="fault", name=f"checkpoint file {'truncated' if how == 'truncate' else 'bit-flipped'}"
           " on disk, then the worker killed", injected=len(damaged), survived=len(damaged) if skipped_ok else 0,
           data_lost=len(findings), note=f"relaunched from step {resumed_step}; damaged {sorted(damaged_steps)}")
    assert result.state is RunState.COMPLETED, result.reason
    assert not findings, "\n".join(findings)
    assert resumed_step not in damaged_steps
    if resumed_step < min(damaged_steps):  # the damaged ones were the newest healthy: each skipped with an alert
        assert damaged_steps <= corrupt_alerts, (damaged_steps, corrupt_alerts)
        assert damaged_steps <= corrupt_health
        # the relaunched worker trains those steps again and writes them anew: intact, verified ones
        for step in damaged_steps & {e["step"] for e in registry["entries"]}:
            assert step not in registry_corrupt
        assert resumed_step == max(e.step for e in healthy if e.step not in damaged_steps)
    loads = [r for r in read_jsonl(run_dir / "loads.jsonl") if r["how"] == "resume"]
    assert loads and all(r["loaded"] for r in loads)
