"""`rlguard reward train PREFS.jsonl`: train a reward model on preference pairs with trl.

The PPO trainer scores responses with a sequence-classification model (`reward: DIR` in the
training config). This command makes one from human (or synthetic) preferences:

    {"prompt": "How was the film?", "chosen": " I loved it.", "rejected": " It was awful."}
    {"chosen": "A kind answer.", "rejected": "A rude answer."}          # prompt is optional

Pipeline: read and validate every line (a bad line is an error naming the file and line) ->
shuffle with the seed and hold out `--eval-fraction` of the pairs -> trl `RewardTrainer`
(Bradley-Terry loss `-log sigmoid(r_chosen - r_rejected)`) on the rest -> save model +
tokenizer to OUT -> reload OUT and measure pairwise accuracy on the held-out pairs (so the
figure describes exactly what the PPO trainer will load) -> OUT/reward_eval.json.

Text format (the contract with the PPO reward scorer, `ppo.rewards.HFReward`): a pair side is
scored as the plain string `prompt + response`, tokenized with the tokenizer's defaults, no
EOS appended (the trainer decodes responses without special tokens), the score read at the
last non-pad token. We tokenize ourselves with `reward_text()` instead of letting trl append
an EOS, so training and PPO scoring see identical token sequences;
OUT/reward_eval.json records the format under "text_format".
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TEXT_FORMAT = "prompt + response"
EVAL_FILE = "reward_eval.json"


class PreferenceFileError(ValueError):
    """A preference file that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    lineno: int  # 1-based line in the source file, for messages


# ----------------------------------------------------------------------------- input


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """Parse a JSON Lines preference file. Blank lines are skipped; anything else must be valid."""
    path = Path(path)
    if not path.is_file():
        raise PreferenceFileError(f"{path}: no such file (expected JSON Lines of chosen/rejected pairs)")
    pairs: list[PreferencePair] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            pairs.append(_parse_line(path, lineno, line))
    if len(pairs) < 2:
        raise PreferenceFileError(
            f"{path}: {len(pairs)} preference pair(s); need at least 2 (one to train on, one to evaluate)"
        )
    return pairs


def _parse_line(path: Path, lineno: int, line: str) -> PreferencePair:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise PreferenceFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise PreferenceFileError(
            f'{where}: expected a JSON object like {{"prompt": ..., "chosen": ..., "rejected": ...}}, '
            f"got {type(obj).__name__}"
        )
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise PreferenceFileError(f'{where}: missing field "{key}" (each line needs "chosen" and "rejected")')
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise PreferenceFileError(f'{where}: field "{key}" must be a non-empty string, got {obj[key]!r:.60}')
    prompt = obj.get("prompt", "")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise PreferenceFileError(f'{where}: field "prompt" must be a string, got {type(prompt).__name__}')
    if obj["chosen"] == obj["rejected"]:
        raise PreferenceFileError(f'{where}: "chosen" and "rejected" are identical; the pair teaches nothing')
    return PreferencePair(prompt=prompt, chosen=obj["chosen"], rejected=obj["rejected"], lineno=lineno)


def split_pairs(
    pairs: list[PreferencePair], eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Shuffle with `seed` and hold out round(eval_fraction * n) pairs (at least 1, at most n-1)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"--eval-fraction must be in (0, 1), got {eval_fraction}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_eval = min(len(order) - 1, max(1, round(eval_fraction * len(order))))
    return order[n_eval:], order[:n_eval]


def reward_text(prompt: str, response: str) -> str:
    """The exact string a reward model trained here scores (see module docstring)."""
    return prompt + response


# ----------------------------------------------------------------------------- scoring


def score_texts(model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 1024) -> list[float]:
    """Scalar reward of each text under a sequence-classification model (right padding, no grad;
    texts longer than `max_length` tokens are cut, as the PPO scorer cuts them)."""
    import torch

    scores: list[float] = []
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # as trl's preference collator pads during training
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                                max_length=max_length).to(device)
                scores += model(**enc).logits[:, 0].float().tolist()
    finally:
        tokenizer.padding_side = padding_side
    return scores


def pairwise_accuracy(model, tokenizer, pairs: list[PreferencePair], max_length: int = 1024) -> tuple[float, float]:
    """(share of pairs where chosen outscores rejected, ties counting 1/2; mean margin)."""
    chosen = score_texts(model, tokenizer, [reward_text(p.prompt, p.chosen) for p in pairs], max_length=max_length)
    rejected = score_texts(model, tokenizer, [reward_text(p.prompt, p.rejected) for p in pairs],
                           max_length=max_length)
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected))
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)
    return wins / len(pairs), margin


# ----------------------------------------------------------------------------- training


@dataclass
class RewardTrainingOptions:
    model: str
    """Base model: a local directory or HF id (a causal LM gets a fresh 1-output score head)."""
    out: str
    """Directory to write the reward model + tokenizer + reward_eval.json into."""
    epochs: float = 1.0
    """Passes over the training pairs."""
    eval_fraction: float = 0.1
    """Share of pairs held out for the accuracy figure (never trained on)."""
    seed: int = 0
    """Seed for the split, the score-head initialisation and data order."""
    lr: float = 1e-4
    """AdamW learning rate (trl's reward default; tiny random models want ~1e-3)."""
    batch_size: int = 8
    """Pairs per optimizer step (each pair is two sequences)."""
    max_length: int = 1024
    """Pairs with a side longer than this many tokens are skipped (and counted)."""


@dataclass
class RewardTrainingResult:
    out: str
    accuracy: float
    mean_margin: float
    n_train: int
    n_eval: int
    n_skipped_too_long: int
    base_model: str
    epochs: float
    seed: int
    train_seconds: float
    text_format: str = TEXT_FORMAT


def train_reward_model(
    train: list[PreferencePair], held_out: list[PreferencePair], opts: RewardTrainingOptions
) -> RewardTrainingResult:
    """Train with trl's RewardTrainer, save to opts.out, reload and evaluate on `held_out`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    out = Path(opts.out)
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = RewardConfig(
        output_dir=str(out),
        num_train_epochs=opts.epochs,
        learning_rate=opts.lr,
        per_device_train_batch_size=opts.batch_size,
        max_length=opts.max_length,
        seed=opts.seed,
        bf16=use_bf16,  # trl defaults to bf16, which CPUs run slowly or not at all
        gradient_checkpointing=False,  # memory is not the problem at these sizes; speed is
        save_strategy="no",  # we save once, at the end, ourselves
        report_to="none",
        logging_steps=max(1, len(train) // opts.batch_size // 5),
        disable_tqdm=True,
    )
    # Pre-tokenized rows: trl then skips its own text handling (which would append an EOS the
    # PPO scorer never sees), and only filters by length.
    rows = [
        {
            "chosen_ids": tokenizer(reward_text(p.prompt, p.chosen))["input_ids"],
            "rejected_ids": tokenizer(reward_text(p.prompt, p.rejected))["input_ids"],
        }
        for p in train
    ]
    trainer = RewardTrainer(
        model=opts.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    n_kept = len(trainer.train_dataset)
    if n_kept == 0:
        raise ValueError(f"every training pair is longer than --max-length {opts.max_length} tokens; raise it")
    print(f"training reward model from {opts.model} on {n_kept} pairs for {opts.epochs} epoch(s) ...", flush=True)
    t0 = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - t0
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    # Trainer leaves its arguments next to the weights; they are not part of a model directory.
    (out / "training_args.bin").unlink(missing_ok=True)
    shutil.rmtree(out / "runs", ignore_errors=True)

    # Evaluate what was saved, not the in-memory model: the figure must describe OUT.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    accuracy, margin = pairwise_accuracy(model, reloaded_tok, held_out, max_length=opts.max_length)
    result = RewardTrainingResult(
        out=str(out), accuracy=accuracy, mean_margin=margin, n_train=n_kept, n_eval=len(held_out),
        n_skipped_too_long=len(train) - n_kept, base_model=str(opts.model), epochs=opts.epochs,
        seed=opts.seed, train_seconds=round(train_seconds, 2),
    )
    (out / EVAL_FILE).write_text(json.dumps(asdict(result), indent=1) + "\n")
    return result


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlguard reward train",
        description="Train a reward model (sequence classification, 1 output) on chosen/rejected pairs "
        "with trl's RewardTrainer and report held-out pairwise accuracy.",
    )
    p.add_argument("prefs", help='JSON Lines file: {"prompt"?: str, "chosen": str, "rejected": str} per line')
    p.add_argument("--model", default=None, help="base model dir or HF id (default: the bundled SmolLM2-135M)")
    p.add_argument("--out", default="reward_model", help="output directory (default: ./reward_model)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs (default 1)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share in (0,1) (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed for split, head init, data order (default 0)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    p.add_argument("--max-length", type=int, default=1024, help="skip pairs longer than this (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    return p


def main(argv: list[str]) -> int:
    """`rlguard reward train ...`; returns 0 on success, 2 on bad input."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rlguard reward train PREFS.jsonl [--model M] [--out DIR] [--epochs N] "
              "[--eval-fraction F] [--seed S]\n(see `rlguard reward train --help`)")
        return 0 if argv else 2
    if argv[0] != "train":
        print(f"rlguard reward: unknown action {argv[0]!r}; the only action is `train`", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[1:])
    if not 0.0 < args.eval_fraction < 1.0:
        print(f"rlguard reward train: --eval-fraction must be in (0, 1), got {args.eval_fraction}", file=sys.stderr)
        return 2
    if args.epochs <= 0 or args.batch_size < 1 or args.lr <= 0:
        print("rlguard reward train: --epochs, --batch-size and --lr must be positive", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"rlguard reward train: --out {out} exists and is not empty; pass --overwrite or pick another "
              f"directory", file=sys.stderr)
        return 2
    try:
        pairs = read_preferences(args.prefs)
    except PreferenceFileError as e:
        print(f"rlguard reward train: {e}", file=sys.stderr)
        return 2
    model = args.model
    if model is None:
        from rlguard.ppo.bundled import bundled_model_dir

        model = str(bundled_model_dir())
    train, held_out = split_pairs(pairs, args.eval_fraction, args.seed)
    if out.exists() and args.overwrite:
        shutil.rmtree(out)
    opts = RewardTrainingOptions(
        model=model, out=str(out), epochs=args.epochs, eval_fraction=args.eval_fraction, seed=args.seed,
        lr=args.lr, batch_size=args.batch_size, max_length=args.max_length,
    )
    result = train_reward_model(train, held_out, opts)
    print(
        f"held-out pairwise accuracy: {result.accuracy:.3f} on {result.n_eval} pairs "
        f"(mean margin {result.mean_margin:+.3f}); trained on {result.n_train} pairs in "
        f"{result.train_seconds:.1f} s"
    )
    if result.n_skipped_too_long:
        print(f"note: {result.n_skipped_too_long} training pairs were longer than --max-length and skipped")
    print(f"reward model written to {out} (use it as `reward: {out}` in the training config)")
    return 0
