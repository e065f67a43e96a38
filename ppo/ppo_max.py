"""The PPO-max math, as pure torch functions (no models, no I/O), one trick per function.

Shapes: B responses, T response positions. `mask` is 1.0 for response tokens (EOS included)
and 0.0 for padding after the end of a response. Everything here is unit-tested against a
plain loop or a hand computation (tests/ppo/test_ppo_max_math.py).

Source of each trick: "Secrets of RLHF in Large Language Models Part I: PPO" (Zheng et al.,
2023), and its code OpenLMLab/MOSS-RLHF; see docs/PPO-MAX.md for what the paper keeps.
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (all of them, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------
# Reward normalization and clipping with running statistics
# ---------------------------------------------------------------------------------------------


class RunningMeanStd:
    """Running mean/variance of all scores seen so far (Chan et al. parallel update).

    PPO-max normalizes each raw RM score with the history's statistics and clips the result:
    `clip((r - mu_hist) / sigma_hist, -d, d)`. The state is three floats, saved in checkpoints
    (state_dict / load_state_dict) so that a resumed run normalizes exactly as before.
    """

    def __init__(self, epsilon: float = 1e-8):
        self.mean = 0.0
        self.var = 1.0
        self.count = 0.0
        self.epsilon = epsilon

    def update(self, values: torch.Tensor) -> None:
        x = values.detach().double().flatten()
        # A non-finite score (a broken reward model) must not poison the history for good: it
        # still reaches the metrics and the loss (where the update is skipped), not the stats.
        x = x[torch.isfinite(x)]
        n = x.numel()
        if n == 0:
            return
        batch_mean = float(x.mean())
        batch_var = float(x.var(unbiased=False))
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, float(n)
            return
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = new_mean, m2 / total, total

    @property
    def std(self) -> float:
        return math.sqrt(self.var + self.epsilon)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = float(d["mean"]), float(d["var"]), float(d["count"])


def normalize_and_clip_rewards(scores: torch.Tensor, stats: RunningMeanStd, clip: float | None) -> torch.Tensor:
    """`clip((r - mu_hist) / sigma_hist, -clip, clip)`; the stats are updated with this batch first
    (as MOSS-RLHF does), so the first batch is normalized by its own statistics."""
    stats.update(scores)
    out = (scores - stats.mean) / stats.std
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out


# ---------------------------------------------------------------------------------------------
# Token-level KL penalty
# ---------------------------------------------------------------------------------------------


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 estimator per token: log pi(y_t) - log pi_ref(y_t)."""
    return logprobs - ref_logprobs


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_penalty_per_token: bool,
) -> torch.Tensor:
    """Per-token rewards [B, T]: the (normalized) sequence score at each response's last token,
    minus `kl_coef * (log pi - log pi_ref)` at every response token.

    With `kl_penalty_per_token=False` (vanilla) the KL penalty is summed over the response and
    charged once at the last token, so the sequence-level objective is the same but the
    credit assignment is coarser; with kl_coef=0 there is no penalty at all.
    """
    kl = per_token_kl(logprobs, ref_logprobs) * mask
    lengths = mask.sum(dim=1).long()
    last = (lengths - 1).clamp(min=0)
    # Every tensor follows the inputs' device (a CPU index or zeros meeting CUDA values fails).
    rows = torch.arange(scores.shape[0], device=logprobs.device)
    rewards = torch.zeros_like(logprobs)
    if kl_penalty_per_token:
        rewards = rewards - kl_coef * kl
    else:
        rewards[rows, last] -= kl_coef * kl.sum(dim=1)
    rewards[rows, last] += scores.to(device=rewards.device, dtype=rewards.dtype)
    return rewards * mask


# ---------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens; returns (advantages, returns).

    The value after a response's last token is 0 (the episode ends). Padding positions get
    advantage and return 0. Responses are right-padded, so masking V(t+1) by mask(t+1) ends
    each episode at its own last token.
    """
    B, T = rewards.shape
    values = values * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae * (mask[:, t + 1] if t + 1 < T else 0.0)
        advantages[:, t] = last_gae
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A - mean) / std over the response tokens of the batch (OpenRLHF's default; the paper's
    PPO-max list leaves it out, rlguard's `ppo_max` preset adds it: docs/PPO-MAX.md). Removes a
    shared sign from the advantages: when the per-token KL penalty makes nearly every token's
    return negative and the critic lags, raw advantages push down every sampled token and the
    mass flows to unsampled ones."""
    mean = masked_mean(advantages, mask)
    var = masked_mean((advantages - mean) ** 2, mask)
    return (advantages - mean) / (var.sqrt() + 1e-8) * mask


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def clipped_surrogate_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip loss `mean(max(-A r, -A clip(r, 1-eps, 1+eps)))` over response tokens.

    Returns (loss, clipfrac, approx_kl): clipfrac is the share of tokens where the clipped
    term won (the ratio was clipped); approx_kl is the k3 estimate of KL(old || new),
    `mean((r - 1) - log r)`.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, value_clip: float | None
) -> torch.Tensor:
    """Critic loss. With `value_clip` (PPO-max): `0.5 * max((V - R)^2, (V_clip - R)^2)` where
    `V_clip = old_V + clip(V - old_V, -value_clip, value_clip)`; without: `0.5 * (V - R)^2`."""
    loss = (values - returns) ** 2
    if value_clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        loss = torch.maximum(loss, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def global_grad_norm(parameters) -> torch.Tensor:
    """L2 norm of all gradients together (what clip_grad_norm_ reports), without clipping.
    Per-tensor norms in one fused pass (no float64 copy of the gradients: that copy cost
    ~0.2 s per optimizer step on a 135M model), combined in float64."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0, dtype=torch.float64)
    norms = torch._foreach_norm(grads) if all(g.device == grads[0].device for g in grads) else [
        torch.linalg.vector_norm(g) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.double() for n in norms]))


def clip_gradients_to(parameters, max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale gradients so that their global norm is at most max_norm, reusing a norm already
    computed (clip_grad_norm_ would compute it a second time)."""
    scale = (max_norm / (float(total_norm) + 1e-6))
    if scale < 1.0:
        grads = [p.grad for p in parameters if p.grad is not None]
        torch._foreach_mul_(grads, scale)
