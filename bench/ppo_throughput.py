"""Throughput of our PPO-max step against trl's GRPOTrainer on the same model and batch.

Same model, same number of responses per iteration (`--batch`), same generation limit
(`--max-new-tokens`), same sampling (temperature 0.8, top-p 0.9), same optimizer passes (one
epoch over the batch in minibatches of `--minibatch`), the sentiment reward for both, and
a KL term against a frozen reference for both (trl `beta` = our `kl_coef`, so trl loads and
runs a reference model as we do).

What differs by design, and is part of what is measured: PPO trains a critic; GRPO has none but
needs >= 2 completions per prompt (we give it batch/2 prompts x 2 generations, so the number
of responses is equal). trl samples with `model.generate`; we sample with our own KV-cache
loop (ppo/rollout.py). Ours runs once per critic in `--critics`: `separate` (PPO-max's own
backbone + value head: an extra forward + backward per minibatch) and `shared_backbone` (a
value head on the policy's hidden states from the rollout pass: no extra pass).

One iteration = one of our `train_step()`s = one trl generation cycle (batch/minibatch
optimizer steps). Rounds alternate ours / trl so that load from other processes on a shared
machine hits both alike; the first iteration of each trainer is a warm-up and not counted.
Throughputs are totals over the counted iterations (responses or tokens / seconds); s/iter
is the median.

    .venv/bin/python bench/ppo_throughput.py --models tiny,bundled --rounds 2 --steps 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SAMPLING = {"temperature": 0.8, "top_p": 0.9}


def sentiment_scores(texts: list[str]) -> list[float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    global _VADER
    try:
        analyzer = _VADER
    except NameError:
        analyzer = _VADER = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


# ----------------------------------------------------------------------------- ours


class _Stopwatch:
    """Accumulates the wall time spent inside wrapped callables, per phase."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, phase: str, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

        return timed

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


class OursRunner:
    """Our PPOTrainer, with its phases timed: generation (`ppo.rollout.sample`) and the
    optimisation epochs; the rest is scoring the rollout (policy/reference log-probs, critic
    values, reward), GAE and metrics."""

    def __init__(self, model_path: str, args, run_dir: Path, critic: str = "separate"):
        import rlguard.ppo.trainer as trainer_mod
        from rlguard.ppo.config import load_train_config

        cfg = load_train_config(None, [
            "preset=ppo_max", f"model={model_path}", "reward=sentiment", f"batch_size={args.batch}",
            f"minibatch_size={args.minibatch}", "ppo_epochs=1", f"max_new_tokens={args.max_new_tokens}",
            f"temperature={SAMPLING['temperature']}", f"top_p={SAMPLING['top_p']}", f"kl_coef={args.kl_coef}",
            f"critic={critic}", "critic_pretrain_steps=0",  # the policy must be updated in every timed step, as trl's is
            "lr=1e-6", "checkpoint_every=0", "eval_every=0", "device=cpu", f"torch_threads={args.threads}",
        ])
        self.trainer = trainer_mod.PPOTrainer(cfg, run_dir)
        self.watch = _Stopwatch()
        # Bench-only instrumentation of the real code paths. `sample` is a module global the
        # trainer calls: each runner installs its own timed wrapper when it runs (several
        # runners share the module).
        self._trainer_mod = trainer_mod
        original = getattr(trainer_mod.sample, "__wrapped_original__", trainer_mod.sample)
        self._timed_sample = self.watch.wrap("generation", original)
        self._timed_sample.__wrapped_original__ = original
        self.trainer._optimise = self.watch.wrap("optimisation", self.trainer._optimise)
        self.iterations: list[dict] = []

    def run(self, steps: int) -> None:
        self._trainer_mod.sample = self._timed_sample
        for _ in range(steps):
            self.watch.take()
            t0 = time.perf_counter()
            m = self.trainer.train_step()
            seconds = time.perf_counter() - t0
            phases = self.watch.take()
            self.iterations.append({"seconds": seconds, "phases": phases,
                                    "responses": self.trainer.cfg.batch_size,
                                    "tokens": m["response_length"] * self.trainer.cfg.batch_size})


# ----------------------------------------------------------------------------- trl


class TrlRunner:
    """trl GRPOTrainer; a callback times each generation cycle (steps_per_generation steps)."""

    def __init__(self, model_path: str, args, run_dir: Path):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        from rlguard.ppo.prompts import load_texts

        prompts = load_texts("builtin")
        self.steps_per_generation = args.batch // args.minibatch
        self.cycle_tokens: list[int] = []
        self.iterations: list[dict] = []
        runner = self

        def sentiment(prompts, completions, completion_ids, **_):
            runner.cycle_tokens.append(sum(len(ids) for ids in completion_ids))
            return sentiment_scores(completions)

        class CycleTimer(TrainerCallback):
            def on_step_begin(self, args_, state, control, **kw):
                if state.global_step % runner.steps_per_generation == 0:
                    runner.watch.take()
                    runner._t0 = time.perf_counter()

            def on_step_end(self, args_, state, control, **kw):
                if state.global_step % runner.steps_per_generation == 0:
                    runner.iterations.append({"seconds": time.perf_counter() - runner._t0,
                                              "phases": runner.watch.take(),
                                              "responses": args.batch, "tokens": runner.cycle_tokens[-1]})

        config = GRPOConfig(
            output_dir=str(run_dir), per_device_train_batch_size=args.minibatch,
            steps_per_generation=self.steps_per_generation, num_generations=2, num_iterations=1,
            max_completion_length=args.max_new_tokens, beta=args.kl_coef, learning_rate=1e-6,
            max_steps=self.steps_per_generation, logging_steps=1, report_to="none", save_strategy="no",
            bf16=False, gradient_checkpointing=False, disable_tqdm=True, seed=0, **SAMPLING,
        )
        torch.set_num_threads(args.threads)
        self.trainer = GRPOTrainer(model=model_path, reward_funcs=sentiment, args=config,
                                   train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                                   callbacks=[CycleTimer()])
        self.watch = _Stopwatch()
        model = self.trainer.model  # trl generates with this object on a single process
        model.generate = self.watch.wrap("generation", model.generate)

    def run(self, steps: int) -> None:
        self.trainer.args.max_steps = steps * self.steps_per_generation
        self.trainer.train()


# ----------------------------------------------------------------------------- sampler alone


def sampler_vs_generate(model_path: str, args, reps: int = 3) -> dict:
    """Our KV-cache sampling loop against `model.generate` on the same prompts, alternating,
    every response forced to the full length (generate: min_new_tokens) so both make the same
    number of tokens. Isolates generation from everything else in a training iteration."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlguard.ppo.prompts import load_texts
    from rlguard.ppo.rollout import encode_prompts, sample, step_generator

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"  # generation continues each prompt's last token, as the trainer does
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    prompts = load_texts("builtin")[: args.batch]
    ids, mask = encode_prompts(tok, prompts, 128, torch.device("cpu"))
    ours, theirs = [], []
    no_eos = -1  # ours: an id never sampled, so every response runs to max_new_tokens
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        sample(model, ids, mask, max_new_tokens=args.max_new_tokens, eos_id=no_eos, pad_id=tok.pad_token_id,
               generator=step_generator(0, rep, 0), **SAMPLING)
        t1 = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                           min_new_tokens=args.max_new_tokens, do_sample=True, pad_token_id=tok.pad_token_id,
                           **SAMPLING)
        t2 = time.perf_counter()
        if rep:  # rep 0 is a warm-up
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
    tokens = args.batch * args.max_new_tokens
    return {"ours_tps": tokens * len(ours) / sum(ours), "hf_tps": tokens * len(theirs) / sum(theirs)}


# ----------------------------------------------------------------------------- report


def _rate(rows: list[dict], key: str) -> float:
    """Aggregate throughput over the counted iterations: total `key` / total seconds."""
    return sum(r[key] for r in rows) / sum(r["seconds"] for r in rows)


def summarize(name: str, ours: OursRunner, trl: TrlRunner) -> dict:
    """One row: `name` = model / critic."""
    o, t = ours.iterations[1:], trl.iterations[1:]  # drop each warm-up iteration
    o_sps, t_sps = _rate(o, "responses"), _rate(t, "responses")
    o_tps, t_tps = _rate(o, "tokens"), _rate(t, "tokens")
    return {"model": name, "n_ours": len(o), "n_trl": len(t),
            "ours_s": statistics.median(r["seconds"] for r in o), "trl_s": statistics.median(r["seconds"] for r in t),
            "ours_sps": o_sps, "trl_sps": t_sps, "ours_tps": o_tps, "trl_tps": t_tps,
            "ratio_sps": o_sps / t_sps, "ratio_tps": o_tps / t_tps,
            "shares": _shares(o), "trl_gen_share": _shares(t)["generation"]}


def _shares(rows: list[dict]) -> dict[str, float]:
    total = sum(r["seconds"] for r in rows)
    gen = sum(r["phases"].get("generation", 0.0) for r in rows)
    opt = sum(r["phases"].get("optimisation", 0.0) for r in rows)
    scoring_in_rollout = total - gen - opt  # what is left: rollout scoring, reward, GAE, metrics
    return {"generation": gen / total, "rollout scoring + reward + GAE": scoring_in_rollout / total,
            "optimisation": opt / total}


def table(rows: list[dict]) -> str:
    out = ["| model / our critic | iterations (ours/trl) | s/iter ours | s/iter trl | samples/s ours | samples/s trl | "
           "tokens/s ours | tokens/s trl | ratio samples/s | ratio tokens/s | ours: generation / rollout "
           "scoring / optimisation | trl: generation |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sh = r["shares"]
        split = " / ".join(f"{100 * v:.0f}%" for v in sh.values())
        out.append(f"| {r['model']} | {r['n_ours']}/{r['n_trl']} | {r['ours_s']:.2f} | {r['trl_s']:.2f} | "
                   f"{r['ours_sps']:.2f} | {r['trl_sps']:.2f} | {r['ours_tps']:.1f} | {r['trl_tps']:.1f} | "
                   f"{r['ratio_sps']:.2f}x | {r['ratio_tps']:.2f}x | {split} | {100 * r['trl_gen_share']:.0f}% |")
    return "\n".join(out)


def model_path(name: str, root: Path) -> str:
    if name == "tiny":
        from rlguard.ppo.tiny import build_tiny_lm

        return str(build_tiny_lm(root / "tiny-lm", layers=4, hidden=128))
    if name == "bundled":
        from rlguard.ppo.bundled import bundled_model_dir

        return str(bundled_model_dir())
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="our PPO-max step vs trl GRPOTrainer: samples/s and tokens/s")
    p.add_argument("--models", default="tiny,bundled", help="comma-separated: tiny, bundled, or a model dir")
    p.add_argument("--batch", type=int, default=8, help="responses per iteration")
    p.add_argument("--minibatch", type=int, default=4, help="responses per optimizer step")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--kl-coef", type=float, default=0.05, help="our kl_coef = trl beta")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours / trl")
    p.add_argument("--steps", type=int, default=2, help="iterations per trainer per round")
    p.add_argument("--tiny-steps", type=int, default=6, help="iterations per round for the tiny model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--critics", default="separate,shared_backbone",
                   help="our critic modes to run (each against the same trl rounds)")
    args = p.parse_args(argv)
    if args.batch % args.minibatch or args.batch // args.minibatch < 1:
        p.error("--minibatch must divide --batch")
    torch.set_num_threads(args.threads)
    critics = [c.strip() for c in args.critics.split(",") if c.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            path = model_path(name, root)
            ours = {c: OursRunner(path, args, root / f"ours-{name}-{c}", critic=c) for c in critics}
            trl = TrlRunner(path, args, root / f"trl-{name}")
            steps = args.tiny_steps if name == "tiny" else args.steps
            for r in range(args.rounds):
                # +1 in the first round: each trainer's first iteration is a warm-up.
                for runner in ours.values():
                    runner.run(steps + (r == 0))
                trl.run(steps + (r == 0))
                print(f"{name}: round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            model_rows = [summarize(f"{name} / {c}", runner, trl) for c, runner in ours.items()]
            sampler = sampler_vs_generate(path, args)
            for row in model_rows:
                row["sampler"] = sampler
            rows += model_rows
            print(table(model_rows), flush=True)
    print()
    print(table(rows))
    print()
    print("| model | sampling alone: ours tokens/s | HF generate tokens/s | ratio |")
    print("|---|---|---|---|")
    for r in rows[::len(critics)]:  # one sampler row per model
        sm = r["sampler"]
        print(f"| {r['model']} | {sm['ours_tps']:.1f} | {sm['hf_tps']:.1f} | {sm['ours_tps'] / sm['hf_tps']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
