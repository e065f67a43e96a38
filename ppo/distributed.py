"""torch.distributed glue: what makes N torchrun ranks one data-parallel PPO run.

- `init_from_env()`: under torchrun (WORLD_SIZE > 1 in the environment) join the process
  group: nccl when the ranks train on CUDA (each on cuda:LOCAL_RANK), gloo on CPU.
- Every rank builds the same models, then `broadcast_parameters` copies rank 0's trainable
  weights to all (as DistributedDataParallel does at construction).
- Every rank takes its own slice of each prompt batch (DataCursor shards by rank).
- `all_reduce_gradients` averages the gradients over ranks after each backward, before the
  norm/clip/step: a manual all-reduce rather than DDP wrapping, because the PPO loop runs
  several forwards per step (rollout scoring under no_grad, policy, critic, ptx) and LoRA/peft
  models, where DDP's hooks and unused-parameter bookkeeping add nothing but constraints.
  With identical weights, identical mean gradients and identical optimizer states, the
  replicas stay bit-identical, and so do the grad norm and the skip-on-NaN decision.
- `mean_over_ranks` averages the step metrics, so every rank reports the same numbers.
- Checkpoints: rank 0 writes (with every rank's RNG state, `gather_to_all`); all ranks load.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) if torch.distributed is initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_from_env(device: str = "auto", timeout_s: float = 600.0) -> bool:
    """Join the torchrun process group if this process is one of several ranks (WORLD_SIZE > 1
    set by torchrun) and none is initialised yet. Returns whether one is initialised now.

    `device` is the trainer config's: ranks on CUDA use nccl and pin cuda:LOCAL_RANK, CPU
    ranks use gloo."""
    if not torch.distributed.is_available():
        return False
    if torch.distributed.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        return False
    on_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK") or 0))
    torch.distributed.init_process_group("nccl" if on_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return True


def rank_device(spec: str) -> str:
    """The device string for this rank: a bare 'cuda'/'auto' means this rank's GPU under torchrun."""
    local = os.environ.get("LOCAL_RANK")
    if local is not None and spec in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(local)}"
    return spec


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    """gloo reduces CPU tensors, nccl CUDA tensors."""
    backend = torch.distributed.get_backend()
    return t if (backend == "nccl") == (t.device.type == "cuda") else t.to("cuda" if backend == "nccl" else "cpu")


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


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks (no-op with one process). One flat
    all-reduce per dtype: a parameter without a gradient on this rank counts as zeros, so that
    every rank contributes the same buffer layout."""
    _, world = rank_and_world()
    if world == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
                          for p in group])
        flat = _comm_device(flat)
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        for p in group:
            n = p.numel()
            mean = flat[offset:offset + n].view_as(p).to(p.device)
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
            offset += n


def broadcast_parameters(*models: torch.nn.Module) -> None:
    """Copy rank 0's trainable parameters to every rank (no-op with one process)."""
    _, world = rank_and_world()
    if world == 1:
        return
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                if p.requires_grad:
                    buf = _comm_device(p.data.clone())
                    torch.distributed.broadcast(buf, src=0)
                    p.data.copy_(buf.to(p.device))


def gather_to_all(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] with one process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out
