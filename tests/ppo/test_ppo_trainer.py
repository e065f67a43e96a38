"""PPOTrainer end to end on tiny models: it learns, reports every metric, obeys constraints."""

import math

import pytest
import torch

from rlguard.ppo.config import load_train_config
from rlguard.ppo.trainer import PPOTrainer
from tests.ppo.ppo_helpers import fast_overrides, tiny_lm, tiny_rm

REQUIRED = ["reward", "reward_std", "kl", "kl_seq", "perplexity", "ref_perplexity", "response_length",
            "truncated_fraction", "entropy", "distinct_2", "policy_loss", "value_loss", "clipfrac", "approx_kl",
            "grad_norm", "lr", "kl_coef", "clip_range", "step_seconds", "tokens_per_second"]
EVAL = ["eval_reward", "eval_kl", "eval_ref_perplexity", "eval_response_length", "eval_distinct_2",
        "eval_reward_skew", "eval_reward_p90"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_lm(tmp_path_factory)


def test_tiny_policy_learns_a_simple_reward(lm):
    cfg = load_train_config(None, fast_overrides(
        lm, preset="vanilla", kl_coef=0, lr=3e-3, critic_lr=1e-3, batch_size=16, minibatch_size=8,
        max_new_tokens=8, ppo_epochs=2))
    t = PPOTrainer(cfg)
    rewards = [t.train_step()["reward"] for _ in range(20)]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.15, rewards
    assert t.step == 20
    assert t.last_metrics["kl"] > 0.05  # it moved away from the reference to get there


def test_every_step_reports_the_metrics_md_names_and_the_constraints_in_force(lm):
    cfg = load_train_config(None, fast_overrides(lm, critic_pretrain_steps=1, keep_samples=5))
    t = PPOTrainer(cfg)
    m1 = t.train_step()
    assert set(REQUIRED) <= set(m1)
    assert all(isinstance(m1[k], float) and math.isfinite(m1[k]) for k in REQUIRED)
    # Step 1 was critic pretraining: the policy did not move.
    assert m1["critic_pretraining"] == 1.0 and m1["grad_norm"] == 0.0 and m1["approx_kl"] == 0.0
    assert m1["kl"] == 0.0 and m1["perplexity"] == m1["ref_perplexity"]
    assert 1 <= m1["response_length"] <= 6 and 0 <= m1["truncated_fraction"] <= 1
    assert (m1["kl_coef"], m1["clip_range"], m1["lr"]) == (0.05, 0.2, 1e-5)
    assert t.set_constraints(kl_coef=0.2, lr=5e-6) == {"kl_coef": 0.2, "clip_range": 0.2, "lr": 5e-6}
    m2 = t.train_step()
    assert (m2["kl_coef"], m2["lr"], m2["critic_pretraining"]) == (0.2, 5e-6, 0.0)
    assert m2["grad_norm"] > 0
    with pytest.raises(ValueError, match="clip_range=0.0 is invalid"):
        t.set_constraints(clip_range=0.0)
    with pytest.raises(ValueError, match="kl_coef=nan"):
        t.set_constraints(kl_coef=float("nan"))
    samples = t.recent_samples
    assert len(samples) == 5 and samples[-1]["step"] == 2
    assert set(samples[-1]) == {"step", "prompt", "response", "reward"}


def test_evaluate_is_comparable_across_steps_and_does_not_disturb_training(lm):
    base = fast_overrides(lm, critic_pretrain_steps=0)
    a, b = PPOTrainer(load_train_config(None, base)), PPOTrainer(load_train_config(None, base))
    e1, e2 = a.evaluate(), a.evaluate()
    assert e1 == e2 and set(EVAL) <= set(e1)
    assert abs(e1["eval_kl"]) < 1e-6  # policy == reference before training
    b.evaluate()  # an evaluation in between must not change what training samples
    a.train_step()
    b.train_step()
    assert [s["response"] for s in a.recent_samples] == [s["response"] for s in b.recent_samples]
    assert a.evaluate() != e1  # ... while evaluation does see the policy change


def test_skip_batches_advances_the_prompt_cursor(lm):
    a = PPOTrainer(load_train_config(None, fast_overrides(lm)))
    b = PPOTrainer(load_train_config(None, fast_overrides(lm)))
    a.skip_batches(2)
    b.cursor.next_batch(4), b.cursor.next_batch(4)
    assert a.cursor.next_batch(4) == b.cursor.next_batch(4)


def test_lora_policy_and_critic_from_the_reward_model(lm, tmp_path_factory):
    rm = tiny_rm(tmp_path_factory)
    cfg = load_train_config(None, fast_overrides(lm, reward=str(rm), use_lora=True, critic_pretrain_steps=0,
                                                 lr=1e-3))
    t = PPOTrainer(cfg)
    assert t.reference is None  # the reference is the policy with its adapters off
    trainable = [n for n, p in t.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    # The critic's head starts as the reward model's score head.
    from transformers import AutoModelForSequenceClassification

    score = AutoModelForSequenceClassification.from_pretrained(rm).score.weight
    assert torch.equal(t.critic.value_head.weight.detach(), score.detach())
    m = t.train_step()
    assert math.isfinite(m["reward"]) and m["grad_norm"] > 0
    assert t.train_step()["kl"] != 0.0  # adapters moved the policy away from the reference


def test_ptx_loss_is_mixed_in(lm, tmp_path):
    texts = tmp_path / "pretrain.txt"
    texts.write_text("the movie was good\nwe had a great day at the beach\nthe food was bad\n")
    t = PPOTrainer(load_train_config(None, fast_overrides(lm, ptx_coef=0.5, ptx_data=str(texts),
                                                          critic_pretrain_steps=0)))
    m = t.train_step()
    assert m["ptx_loss"] > 0 and math.isfinite(m["ptx_loss"])


def test_a_nan_reward_is_reported_and_skips_the_update_without_poisoning_the_run(lm):
    from tests.ppo import ppo_reward_fns

    ppo_reward_fns.NAN_CALLS[:] = [ppo_reward_fns._calls[0] + 1]  # the next call returns NaN scores
    cfg = load_train_config(None, fast_overrides(lm, reward="tests.ppo.ppo_reward_fns:nan_on_listed_calls",
                                                 critic_pretrain_steps=0))
    t = PPOTrainer(cfg)
    before = {n: p.detach().clone() for n, p in t.policy.named_parameters()}
    bad = t.train_step()
    assert math.isnan(bad["reward"]) and math.isnan(bad["grad_norm"]) and bad["skipped_updates"] > 0
    assert all(torch.equal(p, before[n]) for n, p in t.policy.named_parameters())
    good = t.train_step()
    assert all(math.isfinite(good[k]) for k in REQUIRED) and good["skipped_updates"] == 0
    assert t.reward_stats.count == 4  # only the finite batch entered the normalizer


def test_chat_template_on_a_tokenizer_without_one_is_a_config_error(lm):
    from rlguard.ppo.config import ConfigError

    with pytest.raises(ConfigError, match="chat_template=true but the tokenizer"):
        PPOTrainer(load_train_config(None, fast_overrides(lm, chat_template=True)))


def test_advantage_whitening_is_a_flag_and_the_raw_advantage_mean_is_reported(lm):
    # ppo_max whitens by default; ppo_max_paper (the paper's list) does not.
    plain = PPOTrainer(load_train_config(None, fast_overrides(lm, critic_pretrain_steps=0,
                                                             preset="ppo_max_paper"))).train_step()
    white = PPOTrainer(load_train_config(None, fast_overrides(lm, critic_pretrain_steps=0))).train_step()
    # Same seed, same rollout: the raw advantages agree; the update differs.
    assert math.isfinite(plain["advantage_mean"]) and plain["advantage_mean"] == white["advantage_mean"]
    assert plain["kl"] == white["kl"] and plain["policy_loss"] != white["policy_loss"]
