"""One rank of the two-process torch.distributed test (run as a script by test_ppo_distributed)."""

import json
import sys

import torch
import torch.distributed as dist


def main(rank: int, world: int, init_file: str, model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.trainer import PPOTrainer
    from tests.ppo.ppo_helpers import fast_overrides

    t = PPOTrainer(load_train_config(None, fast_overrides(model_dir, critic_pretrain_steps=0)))
    m = t.train_step()
    ckpt = t.save_checkpoint(f"{out_dir}/ckpt-rank{rank}")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"rank": t.rank, "world": t.world, "metrics": m, "checkpoint_written": ckpt.exists(),
                   "prompts": [s["prompt"] for s in t.recent_samples]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
