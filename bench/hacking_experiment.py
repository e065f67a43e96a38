"""Reward hacking on the bundled SmolLM2-135M: vanilla PPO vs PPO-max at the same learning rate.

The sentiment reward (VADER compound of the response) is easy to game: a policy that repeats
"great! great! love it!" scores near 1 while its text stops being language. With an aggressive
learning rate, vanilla PPO (KL charged once per sequence, raw scores, no grad clip) should find
that within a few dozen steps: reward up, kl up, distinct_2 / perplexity collapsing. PPO-max at
the same learning rate (per-token KL, normalized + clipped rewards, value clipping, critic
warm-up, grad clipping, advantage whitening) should stay bounded; `ppo_max_paper` (the paper's
list without whitening) shows what whitening adds (bench/notes/ppo_bench.md).

Each run's metric stream is written as it goes (one docs/METRICS.md event per line) to
`bench/fixtures/hacking_<preset>_s<seed>.jsonl`: recorded streams for detector tests. The
first, every 10th and last steps' samples go to `hacking_<preset>_s<seed>_samples.jsonl`, the
settings to `hacking_<preset>_s<seed>.meta.json`.

    .venv/bin/python bench/hacking_experiment.py --steps 40 --lr 2e-4 --kl-coef 0.05   # 3 runs, table
    .venv/bin/python bench/hacking_experiment.py --summarize           # table from saved fixtures

CPU heavy: one SmolLM2 step at batch 8 x 32 tokens is ~10 s on an idle 2-core machine (separate
critic). `--max-seconds` stops a run early and keeps what it recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUMMARY_METRICS = ("reward", "kl", "perplexity", "distinct_2", "response_length", "entropy")


def run_name(preset: str, seed: int) -> str:
    """The fixture stem of one run: `hacking_<run_name>.jsonl`."""
    return f"{preset}_s{seed}"


def run_one(preset: str, seed: int, args: argparse.Namespace) -> None:
    import torch

    from rlguard.monitors.events import MetricEvent
    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.trainer import PPOTrainer

    overrides = [
        f"preset={preset}", f"model={args.model}", "reward=sentiment", f"steps={args.steps}",
        f"batch_size={args.batch}", f"minibatch_size={args.minibatch}", f"max_new_tokens={args.max_new_tokens}",
        f"lr={args.lr}", f"temperature={args.temperature}", f"seed={seed}",
        "checkpoint_every=0", "eval_every=0", f"device={args.device}", f"torch_threads={args.threads}",
    ]
    if args.kl_coef is not None:
        overrides.append(f"kl_coef={args.kl_coef}")
    overrides += args.set
    cfg = load_train_config(None, overrides)
    torch.set_num_threads(args.threads)
    fixtures = Path(args.fixtures)
    fixtures.mkdir(parents=True, exist_ok=True)
    name = run_name(preset, seed)
    metrics_path = fixtures / f"hacking_{name}.jsonl"
    samples_path = fixtures / f"hacking_{name}_samples.jsonl"
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu x{args.threads} threads"
    (fixtures / f"hacking_{name}.meta.json").write_text(json.dumps(
        {"overrides": overrides, "command": " ".join(sys.argv), "device": device, "started": time.time()},
        indent=1) + "\n")
    print(f"== {name}: {' '.join(overrides)}", flush=True)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = PPOTrainer(cfg, run_dir)
        with open(metrics_path, "w") as mf, open(samples_path, "w") as sf:
            while trainer.step < cfg.steps:
                m = trainer.train_step()
                step = trainer.step  # 1-based after the step, as `rlguard train` writes it
                mf.write(MetricEvent(step=step, metrics=m, time=time.time()).to_json() + "\n")
                mf.flush()
                keep = step in (1, cfg.steps) or step % 10 == 0
                out_of_time = bool(args.max_seconds) and time.monotonic() - t_start > args.max_seconds
                if keep or out_of_time:
                    for s in list(trainer.recent_samples)[-cfg.batch_size:]:
                        sf.write(json.dumps({**s, "step": step}) + "\n")
                    sf.flush()
                print(f"  {name} step {step:3d} {m['step_seconds']:5.1f}s  reward {m['reward']:+.3f}  "
                      f"kl {m['kl']:.4f}  ppl {m['perplexity']:.2f}  d2 {m['distinct_2']:.3f}  "
                      f"len {m['response_length']:.1f}", flush=True)
                if out_of_time:
                    print(f"  {name}: stopping after {step} steps (--max-seconds {args.max_seconds})", flush=True)
                    break


# ----------------------------------------------------------------------------- summary


def _read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _peak(events: list[dict], name: str) -> str:
    """Largest value of a metric and the step it came at ("-" when never finite)."""
    finite = [(e["metrics"][name], e["step"]) for e in events
              if isinstance(e["metrics"].get(name), (int, float)) and math.isfinite(e["metrics"][name])]
    if not finite:
        return "-"
    value, step = max(finite)
    return f"{value:.3g} @{step}"


def summary_table(runs: list[str], fixtures: Path = FIXTURES, window: int = 5) -> str:
    """One row per recorded run: each metric's mean over the first and last `window` steps, and
    the peaks of reward and perplexity (a run can game the reward and then fall apart)."""
    rows = ["| run | steps | " + " | ".join(f"{m} first{window} -> last{window}" for m in SUMMARY_METRICS)
            + " | peak reward | peak perplexity |",
            "|---|---|" + "---|" * (len(SUMMARY_METRICS) + 2)]
    for run in runs:
        path = fixtures / f"hacking_{run}.jsonl"
        if not path.is_file():
            continue
        events = _read_events(path)
        head, tail = events[:window], events[-window:]
        cells = []
        for name in SUMMARY_METRICS:
            a = _mean([e["metrics"].get(name) for e in head])
            b = _mean([e["metrics"].get(name) for e in tail])
            cells.append(f"{a:.3g} -> {b:.3g}")
        cells += [_peak(events, "reward"), _peak(events, "perplexity")]
        rows.append(f"| {run} | {len(events)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def sample_lines(run: str, fixtures: Path = FIXTURES, per_step: int = 3) -> str:
    path = fixtures / f"hacking_{run}_samples.jsonl"
    if not path.is_file():
        return ""
    samples = _read_events(path)
    steps = sorted({s["step"] for s in samples})
    out = []
    for step in sorted({steps[0], steps[-1]}) if steps else ():
        out.append(f"{run}, step {step}:")
        for s in [s for s in samples if s["step"] == step][:per_step]:
            text = s["response"].replace("\n", " ")[:160]
            out.append(f"  [{s['reward']:+.2f}] {s['prompt']!r} -> {text!r}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="vanilla,ppo_max_paper,ppo_max", help="comma-separated presets to run, in order")
    p.add_argument("--steps", type=int, default=30, help="PPO steps per run")
    p.add_argument("--batch", type=int, default=8, help="prompts per rollout")
    p.add_argument("--minibatch", type=int, default=4, help="responses per optimizer step")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generation limit")
    p.add_argument("--lr", type=float, default=1e-4, help="policy lr (aggressive: the paper uses 5e-7)")
    p.add_argument("--kl-coef", type=float, default=None, help="KL coefficient (default: the config's)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; every preset runs once per seed")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--model", default="bundled", help="policy model ('bundled' = SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-seconds", type=float, default=0, help="stop a run after this long (0 = no limit)")
    p.add_argument("--fixtures", default=str(FIXTURES), help="where to write the recorded streams")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    p.add_argument("--summarize", action="store_true", help="only print the table from saved fixtures")
    args = p.parse_args(argv)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.summarize:
        for seed in seeds:
            for preset in presets:
                run_one(preset, seed, args)
    fixtures = Path(args.fixtures)
    runs = [run_name(preset, seed) for preset in presets for seed in seeds]
    print(summary_table(runs, fixtures))
    for run in runs:
        print(sample_lines(run, fixtures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
