"""Readers of console output, each printed by the real library: transformers' ProgressCallback and
PrinterCallback (trl's Trainer), OpenRLHF's logger, a W&B offline run's output.log."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rlguard.orchestrator.logformats import LogFormatError, detect, load_run
from tests.orchestrator.logformat_helpers import (
    ONSET,
    assert_same_alerts,
    collapse_rows,
    replay_output,
    write_metrics_md,
)

REPO = Path(__file__).resolve().parents[2]
TRL_NAMES = {"kl": "kl", "reward": "reward", "response_length": "completions/mean_length", "entropy": "entropy",
             "perplexity": "perplexity"}


def g4(v: float) -> float:
    """What a value printed as transformers prints it (f"{v:.4g}") reads back as."""
    return float(f"{v:.4g}")


def _trl_console(path: Path, rows: list[dict], callback: str) -> list[dict]:
    """Drive transformers' own ProgressCallback / PrinterCallback as the Trainer does: step end, log,
    an evaluation every 50 steps. Returns the rows converted by hand (eval values included)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerControl, TrainerState

    cb = ProgressCallback() if callback == "progress" else PrinterCallback()
    state, control = TrainerState(max_steps=len(rows)), TrainerControl()
    hand = []
    with path.open("w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        cb.on_train_begin(None, state, control)
        for i, row in enumerate(rows):
            state.global_step = i + 1
            state.epoch = (i + 1) / 100
            cb.on_step_end(None, state, control)
            cb.on_log(None, state, control, logs={**{TRL_NAMES[k]: v for k, v in row.items()},
                                                  "learning_rate": 1e-6, "epoch": state.epoch})
            hand.append({**{k: g4(v) for k, v in row.items()}, "lr": 1e-6})
            if (i + 1) % 50 == 0:
                for _ in range(2):
                    cb.on_prediction_step(None, state, control, eval_dataloader=[0, 1])
                cb.on_evaluate(None, state, control)
                cb.on_log(None, state, control, logs={"eval_reward": row["reward"], "eval_runtime": 0.5,
                                                      "epoch": state.epoch})
                hand[-1].update(eval_reward=g4(row["reward"]), eval_runtime=0.5)
        cb.on_log(None, state, control, logs={"train_runtime": 9.0, "train_loss": 0.2, "epoch": state.epoch})
        cb.on_train_end(None, state, control)
    return hand


def _write_hand(path: Path, hand: list[dict]) -> Path:
    with path.open("w") as f:
        for i, m in enumerate(hand):
            f.write(json.dumps({"step": i + 1, "metrics": m}) + "\n")
    return path


def test_trl_console_step_from_the_progress_bar(tmp_path):
    log = tmp_path / "train.log"
    hand = _write_hand(tmp_path / "hand.jsonl", _trl_console(log, collapse_rows(), "progress"))
    text = log.read_bytes().decode()
    assert "\r" in text and "'kl': '" in text  # tqdm frames, and values printed as quoted strings
    assert detect(log).name == "trl-console"
    assert_same_alerts(log, hand)
    ev = load_run(log)
    assert ev[49].step == 50 and ev[49].metrics["eval_reward"] == json.loads(hand.read_text().splitlines()[49])[
        "metrics"]["eval_reward"]


def test_trl_console_without_bars_needs_logging_steps(tmp_path):
    log = tmp_path / "train.log"
    hand = _write_hand(tmp_path / "hand.jsonl", _trl_console(log, collapse_rows(), "printer"))
    rc, out, err = replay_output(log)
    assert rc == 2 and out == [] and "--logging-steps" in err and "no training progress bar" in err
    assert_same_alerts(log, hand, "--logging-steps", "1")
    with pytest.raises(LogFormatError, match="must be >= 1"):
        load_run(log, logging_steps=0)


def test_trl_console_counts_logging_steps_and_places_eval_by_epoch(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("{'loss': '0.1', 'kl': '0.01', 'epoch': '0.1'}\n{'loss': '0.2', 'kl': '0.02', 'epoch': '0.2'}\n"
                   "{'eval_loss': '0.5', 'eval_kl': '0.03', 'epoch': '0.3'}\n")
    ev = load_run(log, logging_steps=5)
    assert [(e.step, e.metrics.get("kl"), e.metrics.get("eval_kl")) for e in ev] == [(5, 0.01, None),
                                                                                     (10, 0.02, None),
                                                                                     (15, None, 0.03)]


def _openrlhf_logger():
    """OpenRLHF's own logger (openrlhf/utils/logging_utils.py: its format and NewLineFormatter), imported
    without the package's __init__ (DeepSpeed, Ray); RLGUARD_OPENRLHF_PATH: `pip install --no-deps
    --target DIR openrlhf`. None when not available."""
    import importlib
    import importlib.util

    extra = os.environ.get("RLGUARD_OPENRLHF_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    spec = importlib.util.find_spec("openrlhf") if "openrlhf" not in sys.modules else None
    if "openrlhf" not in sys.modules:
        if spec is None or not spec.submodule_search_locations:
            return None
        root = Path(spec.submodule_search_locations[0])
        for name, p in (("openrlhf", root), ("openrlhf.utils", root / "utils")):
            mod = types.ModuleType(name)
            mod.__path__ = [str(p)]
            sys.modules.setdefault(name, mod)
    return importlib.import_module("openrlhf.utils.logging_utils")


OPENRLHF_NAMES = {"kl": "kl", "reward": "reward", "response_length": "response_length", "entropy": "entropy_loss",
                  "perplexity": "perplexity"}


@pytest.mark.parametrize("writer", ["openrlhf", "as-openrlhf-writes"])
def test_openrlhf_global_step_lines(tmp_path, writer):
    rows = collapse_rows()
    log = tmp_path / "openrlhf.out"
    with log.open("w") as f:
        f.write("INFO 12-02 08:00:00 train_ppo_ray.py:80] Start training\n")
        if writer == "openrlhf":
            utils = _openrlhf_logger()
            if utils is None:
                pytest.skip("openrlhf not importable (RLGUARD_OPENRLHF_PATH); the as-openrlhf-writes case covers it")
            logger = utils.init_logger("openrlhf.trainer.ppo_trainer")
            handler = logger.handlers[0]
            old = handler.setStream(f)
        else:  # openrlhf/utils/logging_utils.py _FORMAT at 3c3be623, with a Ray actor prefix
            logger = logging.getLogger("rlguard-test-openrlhf")
            logger.propagate = False
            handler = logging.StreamHandler(f)
            handler.setFormatter(logging.Formatter("(PPOTrainer pid=77) %(levelname)s %(asctime)s "
                                                  "%(filename)s:%(lineno)d] %(message)s", "%m-%d %H:%M:%S"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        try:
            for i, row in enumerate(rows):
                log_status = {OPENRLHF_NAMES[k]: v for k, v in row.items()}
                log_status.update({"policy_loss": 0.1, "actor_lr": 1e-6, "timing/step_total": 3.5})
                # the trainer's own line: openrlhf/trainer/ppo_trainer.py, fit()
                logger.info(f"✨ Global step {i + 1}: {log_status}")
        finally:
            if writer == "openrlhf":
                handler.setStream(old)
            else:
                logger.removeHandler(handler)
    hand = write_metrics_md(tmp_path / "hand.jsonl",
                            [dict(r, policy_loss=0.1, lr=1e-6, step_seconds=3.5) for r in rows])
    assert detect(log).name == "openrlhf"
    assert_same_alerts(log, hand)


WANDB_SCRIPT = """
import json, pprint, sys
import wandb
rows = json.load(open(sys.argv[2]))
run = wandb.init(mode="offline", dir=sys.argv[1], project="rlguard-test")
for i, data in enumerate(rows):
    # verl with trainer.logger=[console,wandb]: its LocalLogger line, and the W&B history
    print(" - ".join([f"step:{i + 1}"] + [f"{k}:{pprint.pformat(v)}" for k, v in data.items()]), flush=True)
    wandb.log(data, step=i + 1)
run.finish()
"""


def test_wandb_offline_run_directory(tmp_path):
    pytest.importorskip("wandb")
    rows = collapse_rows()
    names = {"kl": "actor/kl_loss", "reward": "critic/score/mean", "response_length": "response_length/mean",
             "entropy": "actor/entropy", "perplexity": "perplexity"}
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{names[k]: v for k, v in r.items()} for r in rows]))
    script = tmp_path / "run.py"
    script.write_text(WANDB_SCRIPT)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO),
           "WANDB_DISABLE_GIT": "true"}
    subprocess.run([sys.executable, str(script), str(tmp_path), str(data)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    wandb_dir = tmp_path / "wandb"
    run = next(wandb_dir.glob("offline-run-*"))
    assert list(run.glob("run-*.wandb")) and (run / "files" / "output.log").is_file()
    hand = write_metrics_md(tmp_path / "hand.jsonl", rows)
    assert detect(wandb_dir).name == detect(run).name == "wandb"
    assert_same_alerts(wandb_dir, hand)
    assert_same_alerts(run, hand)
    assert load_run(run)[ONSET].step == ONSET + 1


WANDB_TRL_SCRIPT = """
import sys
import wandb
from transformers.trainer_callback import ProgressCallback, TrainerControl, TrainerState
run = wandb.init(mode="offline", dir=sys.argv[1], project="rlguard-test")
cb, state, control = ProgressCallback(), TrainerState(max_steps=6), TrainerControl()
cb.on_train_begin(None, state, control)
for step in range(1, 7):
    state.global_step = step
    cb.on_step_end(None, state, control)
    cb.on_log(None, state, control, logs={"loss": 0.1, "kl": step / 100, "epoch": step / 6})
    wandb.log({"train/kl": step / 100}, step=step)
cb.on_train_end(None, state, control)
run.finish()
"""


def test_wandb_output_log_of_a_trl_run_needs_logging_steps(tmp_path):
    """W&B keeps the console through a terminal emulator: the tqdm frames that told each dict's step are
    overwritten, so the reader says so (naming --logging-steps) instead of guessing."""
    pytest.importorskip("wandb")
    script = tmp_path / "run.py"
    script.write_text(WANDB_TRL_SCRIPT)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=300)
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    rc, _, err = replay_output(run)
    assert rc == 2 and "--logging-steps" in err
    events = load_run(run, logging_steps=1)
    assert [(e.step, e.metrics["kl"]) for e in events] == [(s, s / 100) for s in range(1, 7)]
