"""The METRICS.md formulas on a fixed batch, computed by hand."""

import math

import torch

from rlguard.ppo import metrics as M

# Two responses: 3 tokens (ended with EOS) and 1 token then padding (truncated at the limit).
LOGP = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -9.0, -9.0]])
REF = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -9.0, -9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def test_kl_is_mean_over_responses_of_per_token_mean_and_kl_seq_is_mean_of_sums():
    out = M.kl_stats(LOGP, REF, MASK)
    # response 0: per-token kl 0.5, 0, -1 -> mean -1/6, sum -0.5; response 1: 0.5 -> mean 0.5, sum 0.5
    assert math.isclose(out["kl"], (-1 / 6 + 0.5) / 2)
    assert math.isclose(out["kl_seq"], (-0.5 + 0.5) / 2, abs_tol=1e-12)


def test_perplexity_is_token_weighted_over_the_batch():
    # NLL over the 4 real tokens: 1 + 2 + 3 + 0.5 = 6.5 -> exp(6.5 / 4)
    assert math.isclose(M.perplexity(LOGP, MASK), math.exp(6.5 / 4), rel_tol=1e-12)
    assert math.isclose(M.perplexity(REF, MASK), math.exp((1.5 + 2 + 2 + 1) / 4), rel_tol=1e-12)


def test_length_truncation_reward_and_entropy():
    assert M.response_length(MASK) == 2.0
    assert M.truncated_fraction(torch.tensor([True, False])) == 0.5
    r = M.reward_stats(torch.tensor([1.0, 3.0]))
    assert r == {"reward": 2.0, "reward_std": 1.0}
    ent = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    assert M.mean_entropy(ent, MASK) == 2.5
    uniform = torch.zeros(1, 1, 8)
    assert math.isclose(M.token_entropy(uniform).item(), math.log(8), rel_tol=1e-6)


def test_distinct_2_counts_bigrams_within_responses_only():
    # bigrams: (1,2) (2,1) (1,2) | (2,1) | none -> 4 total, 2 distinct; (2,3) across responses is not one
    assert M.distinct_2([[1, 2, 1, 2], [2, 1], [3]]) == 0.5
    assert M.distinct_2([[5, 6, 7]]) == 1.0
    assert M.distinct_2([[1], [2]]) == 0.0  # degenerate: no bigram at all
    assert M.distinct_2([[9, 9, 9, 9, 9]]) == 0.25  # the repetition collapse


def test_reward_distribution_skew_and_p90():
    d = M.reward_distribution([0.0, 0.0, 0.0, 10.0])
    # mean 2.5; m2 = (3*6.25 + 56.25)/4 = 18.75; m3 = (3*-15.625 + 421.875)/4 = 93.75
    assert math.isclose(d["reward_skew"], 93.75 / 18.75**1.5, rel_tol=1e-12)
    assert math.isclose(d["reward_p90"], 7.0)  # linear between 0 (p66.7) and 10 (p100)
    assert M.reward_distribution([1.0, 1.0])["reward_skew"] == 0.0
