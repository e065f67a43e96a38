"""One collapsing run, written in a trainer's own names by that trainer's library, and the same
run converted by hand to METRICS.md: `rlguard replay` must say the same on both."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from rlguard.orchestrator.replay_cli import main
from tests.monitors.monitor_streams import collapse, healthy_stream

N_STEPS, ONSET = 240, 180


def collapse_rows() -> list[dict]:
    """Per-step values in METRICS.md names: healthy, then a KL/length collapse from step ONSET."""
    return collapse(healthy_stream(N_STEPS, seed=31, extra=("entropy",)), onset=ONSET)


def write_metrics_md(path: Path, rows: list[dict], convert=float, start_step: int = 1) -> Path:
    """The hand conversion: one METRICS.md line per step, values as the trainer's file holds them."""
    with path.open("w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"step": start_step + i, "metrics": {k: convert(v) for k, v in row.items()}}) + "\n")
    return path


def replay_output(*argv: str) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*map(str, argv), "--format", "json"])
    return rc, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def assert_same_alerts(native: Path, hand: Path, *flags: str) -> list[dict]:
    """`rlguard replay NATIVE` (no flags) == `rlguard replay HAND.jsonl`, and a collapse is found."""
    rc, got, err = replay_output(native, *flags)
    assert rc == 0, err
    rc, want, err2 = replay_output(hand)
    assert rc == 0, err2
    assert got == want, f"{native}: {err}"
    crit = [r for r in got if r["type"] == "alert" and r["severity"] == "critical"]
    assert crit and ONSET <= crit[0]["step"] <= ONSET + 25, crit[:3]
    return got
