"""A tiny real trl GRPO run (random Llama from ppo/tiny.py, CPU) that leaves the logs a user has:
OUT/checkpoint-N/trainer_state.json, TensorBoard files under OUT/runs, and (the caller redirects
stdout and stderr) the console output with its progress bar. Usage: trl_grpo_logs.py OUT STEPS"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: str, steps: int) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlguard.ppo.tiny import build_tiny_lm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model_dir = build_tiny_lm(Path(out) / "model")
    args = GRPOConfig(output_dir=out, max_steps=steps, save_steps=steps, logging_steps=1, beta=0.04,
                      per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                      learning_rate=1e-4, report_to=["tensorboard"], use_cpu=True, disable_tqdm=False,
                      eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4, seed=0)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                          reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions], args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["the day was"] * 8}),
                          eval_dataset=Dataset.from_dict({"prompt": ["my friend said"] * 4}),
                          processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
