"""Device placement of the PPO-max math: every tensor it creates follows its inputs' device.

There is no GPU here, so the inputs live on torch's `meta` device: like CUDA, mixing it with a
CPU tensor raises ("Tensor on device cpu is not on the expected device meta"), which is the
exact failure a CPU-built index or zeros tensor causes on CUDA.
"""

import pytest
import torch

from rlguard.ppo import ppo_max as X


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    lp, ref = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    scores, values = torch.randn(3, generator=g), torch.randn(3, 5, generator=g)
    return [t.to(device) for t in (scores, lp, ref, mask, values)]


@pytest.mark.parametrize("per_token", [True, False])
def test_token_rewards_and_gae_run_on_a_non_cpu_device(per_token):
    scores, lp, ref, mask, values = _inputs("meta")
    rewards = X.token_rewards(scores, lp, ref, mask, 0.05, per_token)
    adv, ret = X.gae_advantages(rewards, values, mask, 1.0, 0.95)
    assert rewards.device.type == adv.device.type == ret.device.type == "meta"
    assert adv.shape == ret.shape == (3, 5)


def test_token_rewards_accepts_scores_from_another_device_and_dtype():
    # The trainer's scores come from a Python list (CPU, float32); bf16 models give float32
    # log-probs (logits are upcast), and the rewards must stay float32.
    scores, lp, ref, mask, _ = _inputs("cpu")
    rewards = X.token_rewards(scores.double(), lp, ref, mask, 0.0, True)
    assert rewards.dtype == torch.float32
    last = mask.sum(1).long() - 1
    assert torch.allclose(rewards[torch.arange(3), last], scores)


def test_a_bfloat16_model_trains_with_float32_losses_and_finite_metrics(tmp_path_factory):
    import math

    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.rollout import response_logprobs, response_values, sample
    from rlguard.ppo.trainer import PPOTrainer
    from tests.ppo.ppo_helpers import fast_overrides, tiny_lm

    t = PPOTrainer(load_train_config(None, fast_overrides(tiny_lm(tmp_path_factory), critic_pretrain_steps=0,
                                                          dtype="bfloat16")))
    assert next(t.policy.parameters()).dtype == torch.bfloat16
    m = t.train_step()
    assert all(math.isfinite(v) for v in m.values()), {k: v for k, v in m.items() if not math.isfinite(v)}
    ids = t.tokenizer(["hello there"], return_tensors="pt")
    ro = sample(t.policy, ids["input_ids"], ids["attention_mask"], max_new_tokens=3, temperature=1.0, top_p=1.0,
                eos_id=t.tokenizer.eos_token_id, pad_id=t.tokenizer.pad_token_id,
                generator=torch.Generator().manual_seed(0))
    # Log-probs and values (what rewards, GAE and both losses are built from) are float32.
    assert response_logprobs(t.policy, ro).dtype == torch.float32
    assert response_values(t.critic, ro).dtype == torch.float32
