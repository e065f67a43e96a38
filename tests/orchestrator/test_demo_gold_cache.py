"""The starting model's gold result is computed once per model and settings, then read back."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    from rlguard.ppo.config import load_train_config
    from rlguard.ppo.tiny import build_tiny_lm

    model = build_tiny_lm(tmp_path_factory.mktemp("gold-cache") / "tiny-lm")
    return load_train_config(None, [f"model={model}", "max_new_tokens=6", "torch_threads=1"])


PROMPTS = ["How was your day?", "Tell me about the sea.", "What is a good breakfast?"]


def _evaluator(cfg, cache_dir):
    from rlguard.orchestrator.demo.gold import GoldEvaluator

    return GoldEvaluator(cfg, PROMPTS, batch_size=2, cache_dir=cache_dir)


def test_start_result_is_read_back_not_recomputed(tiny_cfg, tmp_path):
    first = _evaluator(tiny_cfg, tmp_path).evaluate(None, "start").to_dict()
    assert len(list(tmp_path.glob("*.json"))) == 1
    again = _evaluator(tiny_cfg, tmp_path)
    again._evaluate = lambda *a, **k: pytest.fail("the cached start result was computed again")
    assert again.evaluate(None, "start").to_dict() == first
    assert again.evaluate(None, "start", keep_samples=1).samples == first["samples"][:1]


def test_other_settings_miss_and_a_damaged_file_is_recomputed(tiny_cfg, tmp_path):
    from rlguard.orchestrator.demo import gold_cache
    from rlguard.orchestrator.demo.gold import GOLD_SEED

    ev = _evaluator(tiny_cfg, tmp_path)
    first = ev.evaluate(None, "start").to_dict()
    longer = tiny_cfg.model_copy(update={"max_new_tokens": 7})
    key = gold_cache.start_key(ev.model_path, tiny_cfg, PROMPTS, 2, GOLD_SEED)
    assert gold_cache.start_key(ev.model_path, longer, PROMPTS, 2, GOLD_SEED) != key
    assert gold_cache.start_key(ev.model_path, tiny_cfg, PROMPTS[:2], 2, GOLD_SEED) != key
    stored = tmp_path / f"{ev.start_key()}.json"
    assert stored.is_file()
    stored.write_text('{"metrics": ')  # torn write
    assert gold_cache.load(tmp_path, ev.start_key()) is None
    assert ev.evaluate(None, "start").to_dict() == first
    assert json.loads(stored.read_text()) == first  # rewritten whole


def test_no_cache_dir_writes_nothing(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("RLGUARD_CACHE", str(tmp_path))
    _evaluator(tiny_cfg, None).evaluate(None, "start")
    assert not any(tmp_path.rglob("*.json"))
