"""critic=shared_backbone: a value head on the policy's own hidden states, no second backbone."""

import math

import pytest
import torch

from rlguard.ppo.checkpoint_files import CheckpointError
from rlguard.ppo.config import load_train_config
from rlguard.ppo.models import ValueHead, position_ids_from_mask
from rlguard.ppo.rollout import encode_prompts, response_logprobs, sample, step_generator
from rlguard.ppo.trainer import PPOTrainer
from tests.ppo.ppo_helpers import fast_overrides, tiny_lm

SHARED = {"critic": "shared_backbone"}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_lm(tmp_path_factory)


def _trainer(lm, **extra) -> PPOTrainer:
    return PPOTrainer(load_train_config(None, fast_overrides(lm, **{**SHARED, **extra})))


def test_the_critic_is_only_a_head_and_its_lr_default_suits_one(lm):
    t = _trainer(lm)
    assert isinstance(t.critic, ValueHead)
    hidden = t.policy.config.hidden_size
    assert sum(p.numel() for p in t.critic.parameters()) == hidden + 1
    assert t.cfg.critic_lr == 1e-4
    assert PPOTrainer(load_train_config(None, fast_overrides(lm))).cfg.critic_lr == 3e-5  # separate: unchanged


def test_captured_features_are_the_final_hidden_states_at_the_response_positions(lm):
    t = _trainer(lm)
    ids, mask = encode_prompts(t.tokenizer, ["a b c", "hello there friend"], 16, t.device)
    ro = sample(t.policy, ids, mask, max_new_tokens=5, temperature=1.0, top_p=1.0, eos_id=t.tokenizer.eos_token_id,
                pad_id=t.tokenizer.pad_token_id, generator=step_generator(0, 0, 0))
    with torch.no_grad():
        logp, entropy, features = response_logprobs(t.policy, ro, with_features=True)
        full_ids, full_mask = ro.full()
        hidden = t.policy.model(input_ids=full_ids, attention_mask=full_mask,
                                position_ids=position_ids_from_mask(full_mask)).last_hidden_state
    P, R = ro.prompt_ids.shape[1], ro.response_ids.shape[1]
    assert entropy is None and features.shape == (2, R, hidden.shape[-1])
    torch.testing.assert_close(features, hidden[:, P - 1:P + R - 1])
    torch.testing.assert_close(logp, response_logprobs(t.policy, ro))  # same log-probs as without the hook


def test_pretraining_fits_the_head_and_leaves_the_policy_alone(lm):
    # Same seeds and a frozen policy: both runs see the same rollouts and returns, so their value
    # losses differ only by what the head learned. Raw (vanilla) rewards, here with a mean far from the
    # zero a fresh head predicts: a head that learns gets well below the frozen one.
    common = {"preset": "vanilla", "critic_pretrain_steps": 8, "batch_size": 8, "minibatch_size": 4,
              "reward": "tests.ppo.ppo_reward_fns:one_plus_e_fraction"}
    fitted = _trainer(lm, critic_lr=3e-3, **common)
    frozen = _trainer(lm, critic_lr=1e-12, **common)
    before = {k: v.clone() for k, v in fitted.policy.state_dict().items()}
    fit_losses = [fitted.train_step()["value_loss"] for _ in range(8)]
    frozen_losses = [frozen.train_step()["value_loss"] for _ in range(8)]
    assert all(torch.equal(before[k], v) for k, v in fitted.policy.state_dict().items())
    assert sum(fit_losses[4:]) < 0.7 * sum(frozen_losses[4:]), (fit_losses, frozen_losses)


def test_tiny_policy_learns_a_simple_reward_with_a_shared_critic(lm):
    t = _trainer(lm, preset="vanilla", kl_coef=0, lr=3e-3, critic_lr=1e-3, batch_size=16, minibatch_size=8,
                 max_new_tokens=8, ppo_epochs=2)
    rewards = [t.train_step()["reward"] for _ in range(20)]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.15, rewards


def test_resume_is_exact_and_the_checkpoint_holds_just_the_head(lm, tmp_path):
    a = _trainer(lm, critic_pretrain_steps=1)
    full = [a.train_step() for _ in range(4)]
    b = _trainer(lm, critic_pretrain_steps=1)
    b.train_step(), b.train_step()
    ckpt = b.save_checkpoint(tmp_path / "step-000002")
    assert (ckpt / "critic.safetensors").stat().st_size < 64 * 1024
    c = _trainer(lm, critic_pretrain_steps=1)
    c.load_checkpoint(ckpt)
    resumed = [c.train_step() for _ in range(2)]
    for want, got in zip(full[2:], resumed):
        for k in ("reward", "kl", "value_loss", "policy_loss", "grad_norm", "critic_grad_norm"):
            assert math.isclose(want[k], got[k], rel_tol=1e-6, abs_tol=1e-9), (k, want[k], got[k])


def test_a_separate_critic_checkpoint_is_refused_by_a_shared_run_naming_the_key(lm, tmp_path):
    sep = PPOTrainer(load_train_config(None, fast_overrides(lm)))
    ckpt = sep.save_checkpoint(tmp_path / "step-000000")
    with pytest.raises(CheckpointError, match="critic='separate'.*resume with the same critic"):
        _trainer(lm).load_checkpoint(ckpt)
