"""The public real-run corpus (bench/fixtures/corpus/public) and its converter.

Every run folder must carry a label that follows bench/fixtures/corpus/README.md, and its
metrics.jsonl must be exactly what bench/corpus_convert.py makes from the raw file kept next to it
(so a converter change that alters a stream shows up here, not as a silent detector regression).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import corpus_convert as cc

PUBLIC = Path(__file__).resolve().parents[2] / "bench" / "fixtures" / "corpus" / "public"
RUNS = sorted(p for p in PUBLIC.iterdir() if p.is_dir() and (p / "label.json").exists())
CLASSES = {"random_tokens", "length_collapse", "pinned_at_cap", "reward_collapse", "kl_runaway", "repetition",
           "pattern_collapse", "nan", "length_runaway"}
TRAINERS = {"trl-grpo", "trl-rloo", "rlguard-ppo", "verl", "openrlhf", "other"}


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_there_are_public_runs_of_both_labels():
    labels = [json.loads((r / "label.json").read_text())["label"] for r in RUNS]
    assert labels.count("collapse") >= 3 and labels.count("healthy") >= 2


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_label_follows_the_schema(run):
    lab = json.loads((run / "label.json").read_text())
    assert set(lab) == {"label", "class", "onset_step", "judged_by", "trainer", "logging_steps", "source", "licence"}
    assert lab["trainer"] in TRAINERS
    assert lab["source"].startswith("https://github.com/") and "/blob/" in lab["source"], "source must pin a commit"
    assert lab["licence"] and len(lab["judged_by"]) > 80
    steps = [e["step"] for e in _events(run)]
    if lab["label"] == "collapse":
        assert lab["class"] in CLASSES
        assert steps[0] <= lab["onset_step"] <= steps[-1]
    else:
        assert lab["label"] == "healthy" and lab["class"].startswith("healthy_") and lab["onset_step"] is None


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_metrics_jsonl_is_what_the_converter_makes_from_the_raw_file(run):
    lab = json.loads((run / "label.json").read_text())
    raw = [p for p in run.iterdir() if p.suffix in (".csv", ".json") and p.name != "label.json"]
    assert len(raw) == 1, f"{run.name}: expected one raw .csv/.json next to metrics.jsonl, found {raw}"
    # How each source's raw file is read (bench/fixtures/corpus/public/INDEX.md says which is which).
    how = {"trl-grpo": (cc.read_trainer_state, "trl", None), "other": (cc.read_csv, "other", "rasbt"),
           "verl": (cc.read_csv, "verl", "shamanez")}
    reader, trainer, table = how[lab["trainer"]]
    events = cc.to_events(reader(raw[0]), trainer, table)
    assert events == _events(run)
    steps = [e["step"] for e in events]
    assert steps == sorted(set(steps)), "one event per logged step, steps strictly increasing"


def test_train_and_eval_records_of_one_step_merge_into_one_event(tmp_path):
    state = {"log_history": [
        {"step": 5, "loss": 0.1, "reward": 1.0, "completion_length": 40.0, "kl": 0.01, "epoch": 0.1},
        {"step": 5, "eval_loss": 0.2, "eval_reward": 0.8},
        {"step": 10, "loss": 0.1, "reward": 1.2, "completions/mean_length": 38.0, "entropy": float("nan")},
        {"step": 10, "train_runtime": 12.0, "total_flos": 1.0},
    ]}
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(state))
    events = cc.to_events(cc.read_trainer_state(path), "trl")
    assert [e["step"] for e in events] == [5, 10]
    assert events[0]["metrics"] == {"loss": 0.1, "reward": 1.0, "response_length": 40.0, "kl": 0.01,
                                    "eval_loss": 0.2, "eval_reward": 0.8}
    assert events[1]["metrics"]["response_length"] == 38.0
    assert events[1]["metrics"]["entropy"] != events[1]["metrics"]["entropy"]  # NaN kept, it means exactly that


def test_console_lines_get_steps_from_the_logging_interval(tmp_path):
    path = tmp_path / "console.txt"
    path.write_text("{'loss': 0.0, 'reward': 1.5, 'kl': nan, 'epoch': 0.1}\n"
                    "noise line\n"
                    "{'eval_loss': 0.3, 'epoch': 0.1}\n"
                    "{'loss': 0.1, 'reward': 1.7, 'kl': 0.002, 'epoch': 0.2}\n")
    events = cc.to_events(cc.read_hf_console(path, logging_steps=10, first_step=10), "trl")
    assert [e["step"] for e in events] == [10, 20]
    assert events[0]["metrics"]["eval_loss"] == 0.3
    assert events[1]["metrics"]["kl"] == 0.002


def test_verl_console_lines_map_to_metrics_names(tmp_path):
    path = tmp_path / "verl.log"
    path.write_text("(TaskRunner pid=1) step:3 - actor/entropy:0.12 - actor/ppo_kl:np.float64(0.0002) - "
                    "critic/score/mean:0.63 - response_length/mean:167.2 - response_length/clip_ratio:0.08 - "
                    "training/global_step:3\n"
                    "Training Progress:  1%|\n"
                    "(TaskRunner pid=1) step:4 - actor/entropy:nan - critic/score/mean:0.0\n")
    events = cc.to_events(cc.read_verl_console(path), "verl")
    assert [e["step"] for e in events] == [3, 4]
    assert events[0]["metrics"] == {"entropy": 0.12, "approx_kl": 0.0002, "reward": 0.63, "response_length": 167.2,
                                    "truncated_fraction": 0.08}
    assert events[1]["metrics"]["entropy"] != events[1]["metrics"]["entropy"]
