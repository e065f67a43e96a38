"""torch.distributed glue, in one place so that DDP wrapping can be added here later.

Today: every rank runs the same trainer on its own slice of each prompt batch (DataCursor
shards by rank), per-step metrics are averaged over ranks so every rank reports the same
numbers, and only rank 0 writes checkpoints, metrics.jsonl and samples. Gradients are not
yet all-reduced: wrap policy and critic in DistributedDataParallel where PPOTrainer builds
its optimisers to make the ranks one data-parallel run.
"""

from __future__ import annotations

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) if torch.distributed is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def mean_over_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average every metric over ranks (identity with one process). All ranks must pass the
    same keys: they run the same code on same-shaped batches."""
    _, world = rank_and_world()
    if world == 1:
        return metrics
    keys = sorted(metrics)
    backend = torch.distributed.get_backend()
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64,
                     device=device if backend == "nccl" else "cpu")
    torch.distributed.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}
