"""`rlguard reward train`: input validation, a tiny reward model that learns a preference, and
that model used as the PPO trainer's reward."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from rlguard.ppo.reward_training import (
    EVAL_FILE,
    PreferenceFileError,
    main,
    read_preferences,
    reward_text,
    split_pairs,
)
from rlguard.ppo.tiny import build_tiny_lm

POSITIVE = "good great excellent amazing wonderful happy lovely nice fantastic perfect".split()
NEGATIVE = "bad terrible awful horrible sad boring ugly poor annoying nasty".split()
SUBJECTS = ["the movie", "the food", "my day", "the book", "the show", "the city", "our team", "the music"]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


def _write_synthetic_prefs(path, n=160, seed=0):
    """Chosen praises, rejected complains; every fifth line has no prompt (both formats)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            row = {
                "prompt": f"How was {rng.choice(SUBJECTS)}?",
                "chosen": f" It was {rng.choice(POSITIVE)}, really {rng.choice(POSITIVE)}.",
                "rejected": f" It was {rng.choice(NEGATIVE)}, really {rng.choice(NEGATIVE)}.",
            }
            if i % 5 == 0:
                del row["prompt"]
            f.write(json.dumps(row) + "\n")
    return path


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"chosen": "yes"}', 'missing field "rejected"'),
        ('{"chosen": "", "rejected": "no"}', 'field "chosen" must be a non-empty string'),
        ('{"chosen": 3, "rejected": "no"}', 'field "chosen" must be a non-empty string'),
        ('{"prompt": 5, "chosen": "a", "rejected": "b"}', 'field "prompt" must be a string'),
        ('{"chosen": "same", "rejected": "same"}', "identical"),
    ],
)
def test_bad_line_is_reported_with_file_and_line(tmp_path, bad_line, expected):
    path = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "Q?", "chosen": " yes", "rejected": " no"})
    path.write_text(f"{good}\n\n{bad_line}\n{good}\n")  # blank line 2 is skipped, the bad one is line 3
    with pytest.raises(PreferenceFileError) as err:
        read_preferences(path)
    assert f"{path}:3:" in str(err.value)
    assert expected in str(err.value)


def test_cli_exits_2_naming_the_bad_line(tmp_path, capsys):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": "a"}\n')
    assert main(["train", str(path), "--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and '"rejected"' in err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_unknown_action_and_bad_fraction(tmp_path, capsys):
    assert main(["fit", "x.jsonl"]) == 2
    assert "unknown action 'fit'" in capsys.readouterr().err
    prefs = _write_synthetic_prefs(tmp_path / "p.jsonl", n=4)
    assert main(["train", str(prefs), "--eval-fraction", "1.5"]) == 2
    assert "--eval-fraction" in capsys.readouterr().err


def test_prompt_is_optional_and_split_is_seeded_and_disjoint(tmp_path):
    pairs = read_preferences(_write_synthetic_prefs(tmp_path / "p.jsonl", n=20))
    assert pairs[0].prompt == "" and pairs[1].prompt.startswith("How was")
    train, held = split_pairs(pairs, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert {p.lineno for p in train}.isdisjoint({p.lineno for p in held})
    assert split_pairs(pairs, 0.25, seed=3) == (train, held)
    assert split_pairs(pairs, 0.25, seed=4) != (train, held)
    assert reward_text("Q?", " A.") == "Q? A."


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained_reward(tmp_path_factory):
    """A tiny reward model trained on the synthetic preferences through the real CLI entry."""
    root = tmp_path_factory.mktemp("reward")
    base = build_tiny_lm(root / "base")
    prefs = _write_synthetic_prefs(root / "prefs.jsonl")
    out = root / "rm"
    rc = main(["train", str(prefs), "--model", str(base), "--out", str(out), "--epochs", "3",
               "--lr", "1e-3", "--eval-fraction", "0.25", "--seed", "0"])
    assert rc == 0
    return base, out


def test_reward_model_beats_chance_on_held_out_pairs(trained_reward):
    _, out = trained_reward
    report = json.loads((out / EVAL_FILE).read_text())
    assert report["n_eval"] == 40 and report["n_train"] == 120
    assert report["accuracy"] > 0.8, report
    assert report["mean_margin"] > 0
    assert report["text_format"] == "prompt + response"
    # A plain model directory: no trainer leftovers next to the weights.
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "training_args.bin").exists()


def test_trained_model_scores_through_the_ppo_reward_loader(trained_reward):
    from rlguard.ppo.rewards import build_reward

    _, out = trained_reward
    reward = build_reward(str(out), torch.device("cpu"), torch.float32)
    prompts = ["How was the weekend?"] * 2
    good, bad = reward(prompts, [" It was wonderful, really lovely.", " It was horrible, really awful."])
    assert math.isfinite(good) and good > bad


def test_trained_model_is_the_reward_of_a_short_ppo_run(trained_reward, tmp_path):
    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.rewards import build_reward
    from rlguard.ppo.trainer import PPOTrainer

    base, out = trained_reward
    cfg = load_train_config(None, [
        f"model={base}", f"reward={out}", "steps=2", "batch_size=4", "minibatch_size=2",
        "max_new_tokens=8", "checkpoint_every=0", "eval_every=0", "device=cpu", "torch_threads=2",
    ])
    trainer = PPOTrainer(cfg, tmp_path / "run")
    logged = [trainer.train_step() for _ in range(2)]
    assert trainer.step == 2
    assert all(math.isfinite(m["reward"]) and math.isfinite(m["kl"]) for m in logged)
    # What the trainer recorded as each sample's reward is this model's score of that sample.
    samples = list(trainer.recent_samples)
    assert len(samples) == 8
    fresh = build_reward(str(out), torch.device("cpu"), torch.float32)
    rescored = fresh([s["prompt"] for s in samples], [s["response"] for s in samples])
    assert rescored == pytest.approx([s["reward"] for s in samples], abs=1e-4)
    assert logged[-1]["reward"] == pytest.approx(sum(rescored[4:]) / 4, abs=1e-4)
