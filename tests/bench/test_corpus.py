"""The detection corpus (bench/fixtures/corpus/): every run folder follows the README's layout and
label schema, its converted stream is exactly trl's own records renamed, and the recorder runs end to
end on a real trl trainer (tiny model, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlguard.orchestrator.event_reader import EventReader
from rlguard.orchestrator.integrations.metric_names import has_training_metrics, map_metrics

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "bench" / "fixtures" / "corpus"
LABEL_KEYS = {"label", "class", "onset_step", "judged_by", "trainer", "logging_steps", "source", "licence"}
OPTIONAL_KEYS = {"earliest_onset_step"}
COLLAPSE_CLASSES = {"random_tokens", "length_collapse", "pinned_at_cap", "reward_collapse", "kl_runaway",
                    "repetition", "pattern_collapse", "nan", "length_runaway"}
TRAINERS = {"trl-grpo", "trl-rloo", "rlguard-ppo", "verl", "openrlhf", "other"}
RUNS = sorted(p.parent for p in CORPUS.glob("*/*/metrics.jsonl"))


def _events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_the_corpus_has_runs_of_both_kinds():
    labels = [json.loads((r / "label.json").read_text())["label"] for r in RUNS]
    assert labels.count("collapse") >= 5 and labels.count("healthy") >= 3


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_run_folder_follows_the_schema(run):
    label = json.loads((run / "label.json").read_text())
    assert LABEL_KEYS <= set(label) <= LABEL_KEYS | OPTIONAL_KEYS
    if "earliest_onset_step" in label:
        assert label["label"] == "collapse" and 0 < label["earliest_onset_step"] <= label["onset_step"]
    assert label["label"] in ("collapse", "healthy") and label["trainer"] in TRAINERS
    assert label["judged_by"].strip() and label["source"].strip()
    steps = [e["step"] for e in _events(run)]
    if label["label"] == "healthy":
        assert label["class"].startswith("healthy_") and label["onset_step"] is None
    else:
        assert label["class"] in COLLAPSE_CLASSES and label["onset_step"] in steps
    reader = EventReader(run / "metrics.jsonl")
    assert len(list(reader)) == len(steps) and reader.bad_lines == 0 and reader.segments == 1
    assert steps == sorted(set(steps))
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    if run.parent.name == "ours":
        assert gaps <= {label["logging_steps"]}, f"steps every {gaps}, label says {label['logging_steps']}"
    else:  # a public log may lack a few records (W&B history rows dropped): never denser than labelled
        assert min(gaps, default=label["logging_steps"]) == label["logging_steps"], gaps


@pytest.mark.parametrize("run", [r for r in RUNS if (r / "samples.jsonl").exists()],
                         ids=[r.name for r in RUNS if (r / "samples.jsonl").exists()])
def test_samples_are_small_and_on_logged_steps(run):
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]
    steps = {e["step"] for e in _events(run)}
    per_step: dict[int, int] = {}
    for s in samples:
        assert {"step", "prompt", "completion", "reward"} <= set(s)
        assert s["step"] in steps and len(s["completion"]) <= 200 and len(s["prompt"]) <= 200
        per_step[s["step"]] = per_step.get(s["step"], 0) + 1
    assert max(per_step.values()) <= 8


# Our recordings; the public runs' conversions are checked by tests/bench/test_public_corpus.py.
TRL_RUNS = [r for r in RUNS if (r / "trainer_state.json").exists() and r.parent.name == "ours"]


@pytest.mark.parametrize("run", TRL_RUNS, ids=[r.name for r in TRL_RUNS])
def test_metrics_jsonl_is_trls_own_log_renamed(run):
    """Every training record of trainer_state.json (trl's log_history, verbatim) is one event, same step,
    same values under the METRICS.md names; nothing added, nothing dropped."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    records = [(h["step"], map_metrics(h, "trl")) for h in history]
    records = [(s, m) for s, m in records if has_training_metrics(m)]
    events = _events(run)
    assert [s for s, _ in records] == [e["step"] for e in events]
    for (_, mapped), ev in zip(records, events):
        assert set(mapped) == set(ev["metrics"])
        for k, v in mapped.items():
            assert v == ev["metrics"][k] or (math.isnan(v) and math.isnan(ev["metrics"][k])), k


def test_index_lists_every_run():
    for source in {r.parent for r in RUNS if r.parent.name == "ours"}:
        index = (source / "INDEX.md").read_text()
        for run in (r for r in RUNS if r.parent == source):
            assert f"`{run.name}`" in index, f"{run.name} missing from {source / 'INDEX.md'}: run bench/corpus_index.py"


def test_recorder_writes_a_complete_run_folder_from_a_real_trl_trainer(tmp_path):
    from dataclasses import replace

    from bench.corpus_trl import PRESETS, record

    preset = replace(PRESETS["short_reward"], model="tiny", steps=4, logging_steps=2, max_completion_length=8)
    run = record("short_reward", preset, 3, tmp_path, ["--test"])
    meta = json.loads((run / "run.json").read_text())
    assert run.name == "grpo_short_reward-tiny_ls2_s3" and meta["returncode"] == 0, (run / "console.log").read_text()[-3000:]
    events = _events(run)
    assert [e["step"] for e in events] == [2, 4]
    assert {"reward", "response_length", "truncated_fraction", "entropy"} <= set(events[0]["metrics"])
    assert "kl" not in events[0]["metrics"]  # beta 0: trl logs no KL, and nothing invents one
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {2, 4} and all(len(s["completion"]) <= 200 for s in samples)
    # the short reward is 1 - tokens/cap, recomputed from the recorded token counts
    assert all(s["reward"] == pytest.approx(1 - s["completion_tokens"] / 8, abs=1e-4) for s in samples)
    assert "train_runtime" in (run / "console.log").read_text()
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 4
    assert not any(p.suffix in (".safetensors", ".bin", ".pt") for p in run.rglob("*"))
