"""Record real trl GRPO / RLOO runs for the detection corpus (issue 13).

    python bench/corpus_trl.py --list                                  # the presets
    nice -n 10 python bench/corpus_trl.py --preset lr_high --seed 0    # one run, ~2-5 min on 1 CPU thread
    python bench/corpus_trl.py --preset lr_high --logging-steps 5      # same run setting, sparser logging

Each run is an ordinary trl script (GRPOTrainer or RLOOTrainer of the installed trl, on
SmolLM2-135M-Instruct from `ppo.bundled`, or the random tiny model of `ppo.tiny`), with no rlguard
code in the training loop. It lands in `bench/fixtures/corpus/ours/<trainer>_<preset>_ls<N>_s<seed>/`
(layout: bench/fixtures/corpus/README.md):

- `trainer_state.json`: trl's own log records, verbatim (`trainer.save_state()` at the end);
- `console.log`: everything the training process printed (stdout + stderr), verbatim;
- `samples.jsonl`: at each logged step, up to 8 (prompt, completion, reward) of that step's batch,
  captured by a wrapper around the reward function (what the reward saw), text cut to 200 chars;
- `metrics.jsonl`: one docs/METRICS.md event per logged step, names mapped with
  `orchestrator.integrations.metric_names.map_metrics(..., "trl")`, step = trl's global_step;
- `run.json`: the preset, the settings passed to trl, versions, wall time, the command.

`label.json` is written by a person after reading the samples, never by this script.

Why a child process: `console.log` must be what the trainer printed, including what the logging
handlers that transformers creates at import write to stderr; redirecting a child's file
descriptors catches all of it, rebinding sys.stdout in-process does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # runnable from a checkout without installing

DEFAULT_OUT = REPO / "bench" / "fixtures" / "corpus" / "ours"
SAMPLES_PER_STEP = 8
SAMPLE_CHARS = 200


@dataclass(frozen=True)
class Preset:
    """One run setting. The names say what the setting is, not what it is expected to do: whether a
    run collapsed is judged afterwards from its samples (label.json)."""

    trainer: str  # "grpo" | "rloo"
    reward: str  # a key of REWARDS
    prompts: str  # a key of PROMPT_SETS
    lr: float
    beta: float
    steps: int
    logging_steps: int = 1
    model: str = "smollm2"  # "smollm2" (ppo.bundled) | "tiny" (ppo.tiny, random weights)
    batch: int = 8  # completions per step (per_device_train_batch_size)
    num_generations: int = 4  # completions per prompt: batch / num_generations prompts per step
    max_completion_length: int = 32
    temperature: float = 1.0
    extra: dict = field(default_factory=dict)  # further GRPOConfig / RLOOConfig fields
    note: str = ""


PRESETS: dict[str, Preset] = {
    # lr far above what full fine-tuning of a 135M model tolerates, no KL anchor.
    "lr_high": Preset("grpo", "sentiment", "sentences", lr=3e-4, beta=0.0, steps=30,
                      note="sentiment reward, lr 3e-4, beta 0"),
    "lr_huge": Preset("grpo", "sentiment", "sentences", lr=2e-3, beta=0.0, steps=25,
                      note="sentiment reward, lr 2e-3, beta 0"),
    "lr_very_high": Preset("grpo", "sentiment", "sentences", lr=1e-3, beta=0.0, steps=25,
                           note="sentiment reward, lr 1e-3, beta 0"),
    # A reward that does not depend on the text (a broken reward model): the updates are noise.
    "reward_noise": Preset("grpo", "noise", "sentences", lr=3e-4, beta=0.0, steps=30,
                           note="reward uniform [0, 1] independent of the text, lr 3e-4, beta 0"),
    "lr_high_beta": Preset("grpo", "sentiment", "sentences", lr=3e-4, beta=0.04, steps=30,
                           note="sentiment reward, lr 3e-4, beta 0.04"),
    # A reward that pays for brevity (like a format reward that a one-token answer satisfies).
    "short_reward": Preset("grpo", "short", "sentences", lr=2e-5, beta=0.0, steps=30, max_completion_length=48,
                           note="reward 1 - tokens/cap (pays for short answers), lr 2e-5, beta 0"),
    # A reward that pays for length, on questions the model answers in a few tokens.
    "long_reward": Preset("grpo", "long", "questions", lr=2e-5, beta=0.0, steps=30,
                          note="reward tokens/cap (pays for long answers), lr 2e-5, beta 0"),
    # The same reward on questions asked for a one-word answer: answers start a few tokens long.
    "long_reward_oneword": Preset("grpo", "long", "questions_oneword", lr=2e-5, beta=0.0, steps=30,
                                  note="reward tokens/cap on 'answer in one word' questions, lr 2e-5, beta 0"),
    # Sentiment with a KL penalty at a lr high enough to move far from the reference.
    "kl_push": Preset("grpo", "sentiment", "sentences", lr=5e-5, beta=0.04, steps=40,
                      note="sentiment reward, lr 5e-5, beta 0.04"),
    "sentiment_modest": Preset("grpo", "sentiment", "sentences", lr=1e-5, beta=0.04, steps=30,
                               note="sentiment reward, lr 1e-5, beta 0.04"),
    "sentiment_modest_beta0": Preset("grpo", "sentiment", "sentences", lr=1e-5, beta=0.0, steps=30,
                                     note="sentiment reward, lr 1e-5, beta 0"),
    "lr_tiny": Preset("grpo", "sentiment", "sentences", lr=1e-8, beta=0.0, steps=30,
                      note="sentiment reward, lr 1e-8 (learns nothing), beta 0"),
}


# ----------------------------------------------------------------------------- prompts


def _sentence_prompts() -> list[str]:
    lines = (REPO / "ppo" / "data" / "prompts.jsonl").read_text().splitlines()
    return [f"Complete the sentence: {json.loads(x)['prompt']}" for x in lines if x.strip()]


# Questions SmolLM2-Instruct answers in a few tokens: room for a length reward to push answers up.
_QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "What color is the sky?",
    "What is 2 + 3?", "Name a fruit that is yellow.", "What is the opposite of hot?",
    "Which planet do we live on?", "What do bees make?", "How many days are in a week?",
    "What is frozen water called?", "What animal says moo?", "What is the largest ocean?",
    "Name a primary color.", "What is 10 minus 4?", "What language is spoken in Spain?",
    "What do you call a baby dog?", "Which season comes after winter?", "What is the boiling point of water in Celsius?",
    "Who wrote Romeo and Juliet?", "What gas do plants take in?", "How many continents are there?",
    "What is the capital of Japan?", "What shape has three sides?", "What is the first letter of the alphabet?",
]

PROMPT_SETS = {"sentences": _sentence_prompts, "questions": lambda: list(_QUESTIONS),
               "questions_oneword": lambda: [f"{q} Answer in one word." for q in _QUESTIONS]}


# ----------------------------------------------------------------------------- rewards


def _text(completion) -> str:
    """The completion's text: conversational completions are [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):
        return " ".join(m.get("content", "") for m in prompt if m.get("role") == "user")
    return str(prompt)


def make_reward(name: str, cap: int):
    """reward(prompts, completions, completion_ids) -> list[float] for trl; `cap` = max_completion_length."""
    if name == "sentiment":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        analyzer = SentimentIntensityAnalyzer()
        return lambda completions, completion_ids: [
            float(analyzer.polarity_scores(_text(c))["compound"]) for c in completions]
    if name == "short":
        return lambda completions, completion_ids: [1.0 - len(ids) / cap for ids in completion_ids]
    if name == "noise":
        import random

        rng = random.Random(12345)  # seeded: a rerun scores the same way
        return lambda completions, completion_ids: [rng.random() for _ in completions]
    if name == "long":
        return lambda completions, completion_ids: [len(ids) / cap for ids in completion_ids]
    raise ValueError(f"unknown reward {name!r}: expected one of {', '.join(REWARDS)}")


REWARDS = ("sentiment", "short", "long", "noise")


# ----------------------------------------------------------------------------- the training child


def _model_dir(kind: str, work: Path) -> Path:
    if kind == "smollm2":
        from rlguard.ppo.bundled import bundled_model_dir

        return bundled_model_dir()
    if kind == "tiny":
        from rlguard.ppo.tiny import build_tiny_lm

        return build_tiny_lm(work / "tiny-model")
    raise ValueError(f"unknown model {kind!r}: expected smollm2 or tiny")


def train(preset: Preset, seed: int, run_dir: Path, work: Path) -> None:
    """Run the trainer (in the child process); write samples.jsonl, metrics.jsonl, trainer_state.json."""
    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from rlguard.orchestrator.integrations.metric_names import has_training_metrics, map_metrics

    Config, Trainer = (GRPOConfig, GRPOTrainer) if preset.trainer == "grpo" else (RLOOConfig, RLOOTrainer)
    model_dir = _model_dir(preset.model, work)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = PROMPT_SETS[preset.prompts]()
    conversational = tok.chat_template is not None
    rows = [[{"role": "user", "content": p}] for p in prompts] if conversational else prompts
    dataset = Dataset.from_dict({"prompt": rows})

    score = make_reward(preset.reward, preset.max_completion_length)
    batches: dict[int, list[dict]] = {}  # step -> the samples of the batch trained at that step

    def reward(prompts, completions, completion_ids, trainer_state, **_kw) -> list[float]:
        scores = score(completions, completion_ids)
        step = trainer_state.global_step + 1  # the batch scored now is trained at the next step
        batches[step] = [{"step": step, "prompt": _prompt_text(p)[:SAMPLE_CHARS],
                          "completion": _text(c)[:SAMPLE_CHARS], "reward": round(float(s), 4),
                          "completion_tokens": len(ids)}
                         for p, c, ids, s in list(zip(prompts, completions, completion_ids, scores))[:SAMPLES_PER_STEP]]
        return scores

    reward.__name__ = preset.reward  # trl logs rewards/<name>/mean

    metrics_f = (run_dir / "metrics.jsonl").open("w")
    samples_f = (run_dir / "samples.jsonl").open("w")

    class Record(TrainerCallback):
        """One metrics event and the step's samples per trl log record (trl's step numbers)."""

        def on_log(self, args, state, control, logs=None, **kw):
            mapped = map_metrics(logs or {}, "trl")
            if not has_training_metrics(mapped):
                return  # the end-of-training summary (train_runtime, ...)
            step = state.global_step
            metrics_f.write(json.dumps({"step": step, "time": time.time(), "metrics": mapped}) + "\n")
            metrics_f.flush()
            for s in batches.get(step, []):
                samples_f.write(json.dumps(s) + "\n")
            samples_f.flush()
            for old in [k for k in batches if k <= step]:
                del batches[old]

    kwargs = dict(
        output_dir=str(work / "trl"), max_steps=preset.steps, logging_steps=preset.logging_steps,
        learning_rate=preset.lr, beta=preset.beta, per_device_train_batch_size=preset.batch,
        num_generations=preset.num_generations, max_completion_length=preset.max_completion_length,
        temperature=preset.temperature, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
        use_cpu=True, disable_tqdm=True, log_completions=True, num_completions_to_print=2,
        dataloader_num_workers=0, **preset.extra)
    trainer = Trainer(model=model, reward_funcs=reward, args=Config(**kwargs), train_dataset=dataset,
                      processing_class=tok, callbacks=[Record()])
    try:
        trainer.train()
    finally:
        metrics_f.close()
        samples_f.close()
        trainer.save_state()  # trl's own records: output_dir/trainer_state.json
        shutil.copy(work / "trl" / "trainer_state.json", run_dir / "trainer_state.json")


# ----------------------------------------------------------------------------- the parent


def run_name(preset_name: str, preset: Preset, seed: int) -> str:
    model = "" if preset.model == "smollm2" else f"-{preset.model}"  # the default model goes unnamed
    return f"{preset.trainer}_{preset_name}{model}_ls{preset.logging_steps}_s{seed}"


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("trl", "transformers", "torch", "accelerate", "vadersentiment"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def record(preset_name: str, preset: Preset, seed: int, out: Path, argv: list[str]) -> Path:
    """Train in a child process with its output in console.log; write run.json. Returns the run folder."""
    run_dir = out / run_name(preset_name, preset, seed)
    if run_dir.exists() and (run_dir / "label.json").exists():
        raise SystemExit(f"{run_dir} is labelled already; move it away first (labels are never overwritten)")
    run_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="corpus_trl_"))
    spec = json.dumps({"preset": asdict(preset), "seed": seed, "run_dir": str(run_dir), "work": str(work)})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    t0 = time.time()
    with (run_dir / "console.log").open("w") as console:
        rc = subprocess.call([sys.executable, __file__, "--child", spec], stdout=console,
                             stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.time() - t0
    shutil.rmtree(work, ignore_errors=True)  # weights and trl's output dir: never part of the corpus
    meta = {"preset": preset_name, "settings": asdict(preset), "seed": seed, "returncode": rc,
            "wall_seconds": round(wall, 1), "started": t0, "versions": _versions(), "device": "cpu, 1 torch thread",
            "command": "bench/corpus_trl.py " + " ".join(argv)}
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir}: rc={rc}, {wall:.0f} s")
    return run_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logging-steps", type=int, help="override the preset's logging_steps")
    p.add_argument("--steps", type=int, help="override the preset's max_steps")
    p.add_argument("--trainer", choices=("grpo", "rloo"), help="override the preset's trainer")
    p.add_argument("--model", choices=("smollm2", "tiny"), help="override the preset's model")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="print the presets and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        train(Preset(**spec["preset"]), spec["seed"], Path(spec["run_dir"]), Path(spec["work"]))
        return 0
    if args.list:
        for name, pr in PRESETS.items():
            print(f"{name:24s} {pr.trainer} {pr.model} steps={pr.steps} ls={pr.logging_steps}: {pr.note}")
        return 0
    if args.preset not in PRESETS:
        print(f"error: --preset must be one of {', '.join(PRESETS)} (got {args.preset!r})", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    overrides = {k: v for k, v in (("logging_steps", args.logging_steps), ("steps", args.steps),
                                   ("trainer", args.trainer), ("model", args.model)) if v is not None}
    preset = replace(preset, **overrides)
    run_dir = record(args.preset, preset, args.seed, args.out, argv)
    return json.loads((run_dir / "run.json").read_text())["returncode"]


if __name__ == "__main__":
    sys.exit(main())
