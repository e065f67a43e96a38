"""The PPO-max math against plain loops and hand computations."""

import math

import numpy as np
import torch

from rlguard.ppo import ppo_max as X


def _gae_loop(rewards, values, lengths, gamma, lam):
    B, T = rewards.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        n = lengths[b]
        running = 0.0
        for t in reversed(range(n)):
            next_v = float(values[b, t + 1]) if t + 1 < n else 0.0
            delta = float(rewards[b, t]) + gamma * next_v - float(values[b, t])
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv


def test_gae_matches_a_plain_loop_with_ragged_lengths():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, generator=g, dtype=torch.float64)
    values = torch.randn(3, 5, generator=g, dtype=torch.float64)
    lengths = [5, 2, 3]
    mask = torch.zeros(3, 5, dtype=torch.float64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)]:
        adv, ret = X.gae_advantages(rewards * mask, values, mask, gamma, lam)
        expected = _gae_loop(rewards * mask, values, lengths, gamma, lam)
        assert torch.allclose(adv, expected, atol=1e-12)
        assert torch.allclose(ret, (expected + values * mask) * mask, atol=1e-12)
        assert float(adv[1, 2:].abs().sum()) == 0.0  # padding stays zero


def test_gae_with_gamma_lambda_one_is_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0, 1.5]], dtype=torch.float64)
    adv, ret = X.gae_advantages(rewards, values, torch.ones(1, 3, dtype=torch.float64), 1.0, 1.0)
    assert torch.allclose(ret, torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64))
    assert torch.allclose(adv, torch.tensor([[1.5, 1.0, 0.5]], dtype=torch.float64))


def test_per_token_kl_penalty_and_score_at_last_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -9.0], [-2.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([2.0, -1.0])
    r = X.token_rewards(scores, logp, ref, mask, kl_coef=0.1, kl_penalty_per_token=True)
    expected = torch.tensor([[-0.1 * 0.5, -0.1 * -1.0, 2.0 - 0.0, 0.0], [-0.1 * 1.0, -1.0 - 0.0, 0.0, 0.0]])
    assert torch.allclose(r, expected)
    # Vanilla: the same total penalty, charged once at the last token.
    v = X.token_rewards(scores, logp, ref, mask, kl_coef=0.1, kl_penalty_per_token=False)
    assert torch.allclose(v, torch.tensor([[0.0, 0.0, 2.0 - 0.1 * (-0.5), 0.0], [0.0, -1.0 - 0.1 * 1.0, 0.0, 0.0]]))
    assert torch.allclose(v.sum(1), r.sum(1))


def test_running_mean_std_matches_numpy_over_batches():
    rms = X.RunningMeanStd()
    chunks = [np.array([1.0, 2.0, 3.0]), np.array([10.0]), np.array([-4.0, 0.5, 7.0, 8.0])]
    for c in chunks:
        rms.update(torch.tensor(c))
    allv = np.concatenate(chunks)
    assert math.isclose(rms.mean, allv.mean(), rel_tol=1e-12)
    assert math.isclose(rms.var, allv.var(), rel_tol=1e-12)
    assert rms.count == len(allv)
    clone = X.RunningMeanStd()
    clone.load_state_dict(rms.state_dict())
    assert clone.state_dict() == rms.state_dict()


def test_reward_normalization_and_clipping():
    rms = X.RunningMeanStd()
    rms.update(torch.tensor([0.0, 2.0]))  # history: mean 1, var 1
    out = X.normalize_and_clip_rewards(torch.tensor([1.0, 1.0]), rms, clip=0.3)
    # stats after the update: values 0,2,1,1 -> mean 1, var 0.5
    assert math.isclose(rms.mean, 1.0) and math.isclose(rms.var, 0.5)
    assert torch.allclose(out, torch.zeros(2))
    out = X.normalize_and_clip_rewards(torch.tensor([10.0, -10.0, 1.1]), rms, clip=0.3)
    assert math.isclose(out[0].item(), 0.3, rel_tol=1e-6) and math.isclose(out[1].item(), -0.3, rel_tol=1e-6)
    assert abs(out[2].item() - (1.1 - rms.mean) / rms.std) < 1e-6
    unclipped = X.normalize_and_clip_rewards(torch.tensor([10.0]), rms, clip=None)
    assert unclipped.item() > 1.0


def test_value_clipping_takes_the_worse_of_clipped_and_unclipped():
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[1.0, -1.0]])
    new = torch.tensor([[0.5, 0.9]])
    mask = torch.ones(1, 2)
    # unclipped: (0.5-1)^2=0.25, (0.9+1)^2=3.61; clipped at 0.2: (0.2-1)^2=0.64, (0.2+1)^2=1.44
    expected = 0.5 * (0.64 + 3.61) / 2
    assert math.isclose(X.value_loss(new, old, ret, mask, 0.2).item(), expected, rel_tol=1e-6)
    assert math.isclose(X.value_loss(new, old, ret, mask, None).item(), 0.5 * (0.25 + 3.61) / 2, rel_tol=1e-6)


def test_clipped_surrogate_clipfrac_and_approx_kl():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.9, 1.0]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    mask = torch.ones(1, 3)
    loss, clipfrac, approx_kl = X.clipped_surrogate_loss(new, old, adv, mask, 0.2)
    # token 0: ratio 1.5, A>0 -> clipped to 1.2: -1.2; token 1: ratio .9, A<0: max(.9, .9) = .9; token 2: -2
    assert math.isclose(loss.item(), (-1.2 + 0.9 - 2.0) / 3, rel_tol=1e-6)
    assert math.isclose(clipfrac.item(), 1 / 3, rel_tol=1e-6)
    r = torch.tensor([1.5, 0.9, 1.0])
    assert math.isclose(approx_kl.item(), float(((r - 1) - r.log()).mean()), rel_tol=1e-5)


def test_global_grad_norm_equals_what_clip_grad_norm_reports():
    a = torch.nn.Parameter(torch.tensor([3.0]))
    b = torch.nn.Parameter(torch.tensor([[4.0, 12.0]]))
    (a.sum() * 1 + (b * b).sum() / 2).backward()  # grads: [1], [4, 12]
    assert math.isclose(X.global_grad_norm([a, b]).item(), math.sqrt(1 + 16 + 144), rel_tol=1e-6)
    assert math.isclose(torch.nn.utils.clip_grad_norm_([a, b], 1.0).item(), math.sqrt(161), rel_tol=1e-6)


def test_clipping_with_the_precomputed_norm_matches_clip_grad_norm():
    def grads(seed):
        torch.manual_seed(seed)
        ps = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
        (sum((q ** 3).sum() for q in ps)).backward()
        return ps

    ours, theirs = grads(0), grads(0)
    X.clip_gradients_to(ours, 1.0, X.global_grad_norm(ours))
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad)
    small = grads(1)
    before = [q.grad.clone() for q in small]
    X.clip_gradients_to(small, 1e9, X.global_grad_norm(small))  # under the bound: untouched
    assert all(torch.equal(a, q.grad) for a, q in zip(before, small))


def test_whitened_advantages_have_zero_mean_unit_std_on_response_tokens_and_zero_on_padding():
    adv = torch.tensor([[-3.0, -2.0, -1.0], [-4.0, -2.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the 9.0 is padding: ignored
    out = X.whiten_advantages(adv, mask)
    kept = out[mask.bool()]
    assert abs(float(kept.mean())) < 1e-6 and abs(float(kept.pow(2).mean().sqrt()) - 1.0) < 1e-5
    assert out[1, 2] == 0.0
    # The order of the tokens is kept: whitening only shifts and scales.
    assert torch.equal(kept.argsort(), adv[mask.bool()].argsort())
