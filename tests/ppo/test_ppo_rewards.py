"""Rewards: the built-in sentiment, validated callables, and an HF reward model."""

import pytest
import torch

from rlguard.ppo.rewards import CallableReward, HFReward, RewardError, SentimentReward, build_reward
from tests.ppo.ppo_helpers import tiny_rm

CPU = torch.device("cpu")


def test_sentiment_prefers_positive_text():
    r = SentimentReward()
    good, bad, flat = r(["p"] * 3, ["what a wonderful, happy day", "awful and terrible", "the table"])
    assert good > 0.5 and bad < -0.5 and flat == 0.0
    assert isinstance(build_reward("sentiment", CPU, torch.float32), SentimentReward)


def test_callable_reward_is_validated():
    ok = build_reward("tests.ppo.ppo_reward_fns:letter_e_fraction", CPU, torch.float32)
    assert isinstance(ok, CallableReward)
    assert ok(["p", "q"], ["ee", "ab"]) == [1.0, 0.0]
    for name, words in [("wrong_length", "3 scores for 2 responses"), ("wrong_type", "str 'high' at index 0"),
                        ("not_a_list", "returned float")]:
        fn = CallableReward(f"tests.ppo.ppo_reward_fns:{name}")
        with pytest.raises(RewardError, match=words):
            fn(["p", "q"], ["a", "b"])
    with pytest.raises(RewardError, match="cannot import module"):
        CallableReward("no_such_module_xyz:f")
    with pytest.raises(RewardError, match="no callable 'missing'"):
        CallableReward("tests.ppo.ppo_reward_fns:missing")


def test_hf_reward_model_scores_prompt_plus_response(tmp_path_factory):
    path = tiny_rm(tmp_path_factory)
    rm = build_reward(str(path), CPU, torch.float32)
    assert isinstance(rm, HFReward) and rm.hf_path == str(path)
    a = rm(["The movie was", "The movie was"], [" great", " great fun and a long answer"])
    b = rm(["The movie was"], [" great"])
    assert len(a) == 2 and a[0] != a[1]
    assert abs(a[0] - b[0]) < 1e-4  # padding in a batch does not change a score
    with pytest.raises(RewardError, match="not a loadable HF"):
        build_reward(str(tmp_path_factory.mktemp("empty")), CPU, torch.float32)
