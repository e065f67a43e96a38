"""Readers of trainers' files, each written by the real library: trainer_state.json (transformers'
TrainerState), TensorBoard (torch's SummaryWriter), verl's Tracking file and console loggers."""

from __future__ import annotations

import math
import os
import sys
import types
from pathlib import Path

import pytest

from rlguard.orchestrator.logformats import LogFormatError, detect, load_run
from tests.orchestrator.logformat_helpers import (
    assert_same_alerts,
    collapse_rows,
    replay_output,
    write_metrics_md,
)

TRL_NAMES = {"kl": "kl", "reward": "reward", "response_length": "completions/mean_length", "entropy": "entropy",
             "perplexity": "perplexity"}


def test_trainer_state_json_train_and_eval_of_a_step_merged(tmp_path):
    from transformers import TrainerState

    rows = collapse_rows()
    history, hand = [], []
    for i, row in enumerate(rows):
        step = i + 1
        history.append({**{TRL_NAMES[k]: v for k, v in row.items()}, "loss": 0.01, "epoch": step / 100, "step": step})
        hand.append(dict(row, loss=0.01))
        if step % 50 == 0:  # evaluation at the same step: its own log_history entry
            history.append({"eval_reward": row["reward"], "eval_completions/mean_length": 99.0, "epoch": step / 100,
                            "step": step})
            hand[-1].update(eval_reward=row["reward"], eval_response_length=99.0)
    history.append({"train_runtime": 12.0, "train_loss": 0.3, "epoch": 2.4, "step": len(rows)})
    ckpt = tmp_path / "out" / f"checkpoint-{len(rows)}"
    ckpt.mkdir(parents=True)
    TrainerState(global_step=len(rows), max_steps=len(rows), log_history=history).save_to_json(
        str(ckpt / "trainer_state.json"))
    (tmp_path / "out" / "checkpoint-10").mkdir()  # an older checkpoint: the newest one is read
    events = load_run(tmp_path / "out")
    assert [e.step for e in events] == list(range(1, len(rows) + 1))
    assert events[49].metrics["eval_response_length"] == 99.0 and events[49].metrics["response_length"] > 0
    assert detect(ckpt / "trainer_state.json").name == detect(ckpt).name == "trainer-state"
    hand_file = tmp_path / "hand.jsonl"
    with hand_file.open("w") as f:
        import json

        for i, m in enumerate(hand):
            f.write(json.dumps({"step": i + 1, "metrics": m}) + "\n")
    assert_same_alerts(tmp_path / "out", hand_file)


def test_tensorboard_event_directory_from_summary_writer(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    rows = collapse_rows()
    # transformers' TensorBoardCallback logs `train/<key>` (rewrite_logs), as a trl run does.
    w = SummaryWriter(log_dir=str(tmp_path / "runs" / "Dec02_host"))
    for i, row in enumerate(rows):
        for k, v in row.items():
            w.add_scalar(f"train/{TRL_NAMES[k]}", v, i + 1)
        w.add_scalar("train/learning_rate", 1e-6, i + 1)
    w.close()
    f32 = lambda v: float(__import__("numpy").float32(v))  # noqa: E731 - TensorBoard stores float32
    hand = write_metrics_md(tmp_path / "hand.jsonl", [dict(r, lr=1e-6) for r in rows], convert=f32)
    assert detect(tmp_path / "runs").name == "tensorboard"
    assert_same_alerts(tmp_path / "runs", hand)
    event_file = next((tmp_path / "runs").rglob("*tfevents*"))
    assert [e.step for e in load_run(event_file)][:3] == [1, 2, 3]  # one event file works too


VERL_NAMES = {"kl": "actor/kl_loss", "reward": "critic/score/mean", "response_length": "response_length/mean",
              "entropy": "actor/entropy", "perplexity": "perplexity"}


def _verl_tracking():
    """verl's own Tracking class, imported from the verl package without its GPU/Ray stack: the
    package's __init__ (which imports Ray and tensordict) is bypassed by registering the parent
    packages by path; verl.utils.tracking itself needs only orjson. RLGUARD_VERL_PATH: a directory
    with verl (and orjson) installed, e.g. `pip install --no-deps --target DIR verl orjson`."""
    import importlib.util

    extra = os.environ.get("RLGUARD_VERL_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    spec = importlib.util.find_spec("verl") if "verl" not in sys.modules else None
    root = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if root is None or importlib.util.find_spec("orjson") is None:
        return None
    for name, p in (("verl", root), ("verl.utils", root / "utils")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(p)]
        sys.modules.setdefault(name, mod)
    import importlib

    return importlib.import_module("verl.utils.tracking")


def _write_verl_like_verl(path_jsonl: Path, path_console: Path, rows: list[dict]) -> None:
    """Exactly what verl writes (volcengine/verl b178a3cd, verl/utils/tracking.py FileLogger.log and
    verl/utils/logger/aggregate_logger.py concat_dict_to_str), for machines without the verl wheel."""
    import json
    import pprint

    with path_jsonl.open("w") as fj, path_console.open("w") as fc:
        fc.write("(TaskRunner pid=4242) Training Progress:   0%|          | 0/240\n")
        for i, row in enumerate(rows):
            data = {VERL_NAMES[k]: v for k, v in row.items()}
            fj.write(json.dumps({"step": i + 1, "data": data}, separators=(",", ":")) + "\n")
            fc.write("(TaskRunner pid=4242) " + " - ".join(
                [f"step:{i + 1}"] + [f"{k}:{pprint.pformat(v)}" for k, v in data.items()]) + "\n")


@pytest.mark.parametrize("writer", ["verl", "as-verl-writes"])
def test_verl_file_logger_jsonl_and_console(tmp_path, writer, capsys):
    rows = collapse_rows()
    jsonl, console = tmp_path / "exp.jsonl", tmp_path / "console.log"
    if writer == "verl":
        tracking = _verl_tracking()
        if tracking is None:
            pytest.skip("verl not importable (set RLGUARD_VERL_PATH to `pip install --no-deps --target DIR verl "
                        "orjson`); the as-verl-writes case covers the format")
        import contextlib

        import numpy as np

        os.environ["VERL_FILE_LOGGER_PATH"] = str(jsonl)
        try:
            with console.open("w") as f, contextlib.redirect_stdout(f):
                tr = tracking.Tracking("proj", "exp", default_backend=["console", "file"])
                for i, row in enumerate(rows):  # numpy scalars, as verl's metrics often are
                    tr.log({VERL_NAMES[k]: np.float64(v) for k, v in row.items()}, step=i + 1)
                tr.logger["file"].finish()
        finally:
            del os.environ["VERL_FILE_LOGGER_PATH"]
        assert "np.float64(" in console.read_text()  # numpy >= 2 reprs: the reader must take them
    else:
        _write_verl_like_verl(jsonl, console, rows)
    hand = write_metrics_md(tmp_path / "hand.jsonl", rows)
    assert detect(jsonl).name == "verl-jsonl" and detect(console).name == "verl-console"
    assert_same_alerts(jsonl, hand)
    assert_same_alerts(console, hand)
    m = load_run(jsonl)[0].metrics
    assert set(m) == {"kl", "reward", "response_length", "entropy", "perplexity"}


def test_verl_null_is_nan_and_records_of_one_step_merge(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_text('{"step":0,"data":{"val-core/acc":0.5}}\n{"step":0,"data":{"actor/ppo_kl":0.01}}\n'
                 '{"step":1,"data":{"actor/ppo_kl":null,"actor/pg_loss":1.0}}\n')
    ev = load_run(f)
    assert [e.step for e in ev] == [0, 1]
    assert ev[0].metrics == {"val-core/acc": 0.5, "approx_kl": 0.01}
    assert math.isnan(ev[1].metrics["approx_kl"]) and ev[1].metrics["policy_loss"] == 1.0


def test_unknown_format_is_one_clear_error(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("".join(f"line {i}: nothing to see\n" for i in range(5000)))
    rc, out, err = replay_output(junk)
    assert rc == 2 and out == []
    assert err.count("\n") == 1 and "no known log format" in err
    for name in ("metrics-jsonl", "trainer-state", "tensorboard", "verl-jsonl", "verl-console", "openrlhf",
                 "trl-console", "wandb"):
        assert name in err
    with pytest.raises(LogFormatError, match="unknown log format 'csv'"):
        load_run(junk, format="csv")
    rc, _, err = replay_output(tmp_path)  # an empty directory
    assert rc == 2 and "directory in no known log format" in err
