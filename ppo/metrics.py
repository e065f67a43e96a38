"""The metrics of docs/METRICS.md, as pure functions of one batch.

Inputs are per-token tensors [B, T] over response positions with `mask` 1.0 on response
tokens (EOS included) and 0.0 on padding. Each function is the formula of METRICS.md, word
for word, and is checked against a hand computation in tests/ppo/test_ppo_metrics.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _f(x) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def reward_stats(scores: torch.Tensor) -> dict[str, float]:
    """`reward`: batch mean of raw RM scores; `reward_std`: their standard deviation
    (population std: the spread of this batch, not an estimate of a larger one)."""
    s = scores.detach().double()
    return {"reward": _f(s.mean()), "reward_std": _f(s.std(unbiased=False)) if s.numel() > 1 else 0.0}


def kl_stats(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """`kl`: mean over responses of the per-token mean of log pi - log pi_ref (k1);
    `kl_seq`: mean over responses of the summed per-token KL."""
    kl = (logprobs - ref_logprobs).double() * mask
    lengths = mask.double().sum(dim=1)
    per_response_mean = kl.sum(dim=1) / lengths.clamp(min=1.0)
    return {"kl": _f(per_response_mean.mean()), "kl_seq": _f(kl.sum(dim=1).mean())}


def perplexity(logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """exp of the mean NLL per response token, token-weighted over the batch."""
    m = mask.double()
    nll = -(logprobs.double() * m).sum() / m.sum().clamp(min=1.0)
    return _f(torch.exp(nll))


def response_length(mask: torch.Tensor) -> float:
    """Mean number of generated tokens per response, EOS included, padding excluded."""
    return _f(mask.double().sum(dim=1).mean())


def truncated_fraction(ended_with_eos: torch.Tensor) -> float:
    """Share of responses that hit the generation limit without EOS."""
    return _f((~ended_with_eos.bool()).double().mean())


def mean_entropy(entropy: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean per-token entropy of the next-token distribution at response positions."""
    m = mask.double()
    return _f((entropy.double() * m).sum() / m.sum().clamp(min=1.0))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) along the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def distinct_2(responses: list[list[int]]) -> float:
    """Distinct bigrams / total bigrams over all responses of the batch (token ids).

    Bigrams never cross responses. A batch without any bigram (every response shorter than two
    tokens: the degenerate case) scores 0.0, the low end, rather than an undefined value."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tokens in responses:
        for a, b in zip(tokens, tokens[1:]):
            seen.add((a, b))
            total += 1
    return len(seen) / total if total else 0.0


def reward_distribution(scores: list[float]) -> dict[str, float]:
    """Shape of a per-prompt reward distribution: sample skewness (Fisher-Pearson, biased
    g1 = m3 / m2^1.5; 0.0 when all rewards are equal) and the 90th percentile (linear)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return {"reward_skew": math.nan, "reward_p90": math.nan}
    centered = x - x.mean()
    m2 = float(np.mean(centered**2))
    m3 = float(np.mean(centered**3))
    skew = m3 / m2**1.5 if m2 > 1e-18 else 0.0
    return {"reward_skew": skew, "reward_p90": float(np.percentile(x, 90))}
