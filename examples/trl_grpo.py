"""trl GRPO under rlguard: the three lines that make a GRPOTrainer supervisable.

    python examples/trl_grpo.py --run-dir runs/grpo-demo --tiny            # standalone
    rlguard run examples/trl_grpo.yaml --out runs/grpo-sup                 # supervised

The rlguard part is `RLGuardCallback.install(...)`, `resume_from_checkpoint=guard.resume_checkpoint()`
and nothing else; the rest is an ordinary trl script. `--tiny` builds a random tiny Llama
(ppo.tiny) so the example runs on a laptop CPU in seconds; pass `--model NAME_OR_DIR` for a real one.

`--spike-at-step N` makes the reward function return an absurd score from step N on, in the
first attempt only: a reproducible "reward hacking" incident for the supervisor to catch and
roll back (the tests use it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROMPTS = ["the day was", "my friend said", "the movie is", "our team played", "the food at home",
           "this book was", "the city at night", "music makes me"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="rlguard run directory (metrics.jsonl, checkpoints/)")
    p.add_argument("--model", help="HF model name or directory (default with --tiny: a random tiny Llama)")
    p.add_argument("--tiny", action="store_true", help="build and use a tiny random model (CPU, seconds)")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps (max_steps)")
    p.add_argument("--save-steps", type=int, default=2, help="trainer checkpoint every this many steps")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (must be > 0 to be tightened)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--spike-at-step", type=int, default=None, help="reward hacking from this step (attempt 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlguard.orchestrator.integrations import RLGuardCallback

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run_dir = Path(args.run_dir)
    model_path = args.model
    if args.tiny or not model_path:
        from rlguard.ppo.tiny import build_tiny_lm

        model_path = str(build_tiny_lm(run_dir / "tiny-model"))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    dataset = Dataset.from_dict({"prompt": PROMPTS * 32})

    trainer_box: list = []  # the reward function needs the trainer's step and the client's attempt

    def length_reward(completions, **_kwargs) -> list[float]:
        scores = [len(c.split()) / 4.0 for c in completions]
        if args.spike_at_step is not None and trainer_box:
            trainer, guard = trainer_box
            if guard.client.attempt == 0 and trainer.state.global_step + 1 >= args.spike_at_step:
                scores = [s + 1000.0 for s in scores]  # the "reward model" is being gamed
        return scores

    config = GRPOConfig(
        output_dir=str(run_dir / "trl"), max_steps=args.steps, save_steps=args.save_steps, logging_steps=1,
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8, beta=args.beta,
        learning_rate=args.lr, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    # --- rlguard: three lines ------------------------------------------------------------
    guard = RLGuardCallback.install(trainer, run_dir=run_dir)
    trainer_box[:] = [trainer, guard]
    trainer.train(resume_from_checkpoint=guard.resume_checkpoint())
    guard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
