"""Seeded sampling: top-p, EOS handling, masks, and reproducibility from the generator alone."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlguard.ppo.rollout import (
    _top_p_filter,
    draw_next_tokens,
    encode_prompts,
    response_logprobs,
    sample,
    step_generator,
)
from tests.ppo.ppo_helpers import tiny_lm


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_top_p_filter(logits, 0.8))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(_top_p_filter(logits, 0.81)).sum() == 3
    assert torch.isfinite(_top_p_filter(logits, 0.1)).sum() == 1  # always at least the top token
    assert torch.equal(_top_p_filter(logits, 1.0), logits)


@pytest.mark.parametrize("scale", [6.0, 0.01])  # peaked: the top-k shortcut; nearly flat: the full sort
def test_fast_nucleus_sampling_draws_from_the_reference_distribution(scale):
    torch.manual_seed(0)
    vocab, n = 3000, 5000
    row = torch.randn(vocab) * scale
    want = torch.softmax(_top_p_filter(row[None], 0.9), dim=-1)[0]
    draws = draw_next_tokens(row.expand(n, vocab).contiguous(), 1.0, 0.9, torch.Generator().manual_seed(1))
    nucleus = set(want.nonzero().flatten().tolist())
    assert set(draws.unique().tolist()) <= nucleus  # never a token outside the nucleus
    if scale > 1:
        assert len(nucleus) < 256
        freq = torch.bincount(draws, minlength=vocab).double() / n
        assert 0.5 * float((freq - want.double()).abs().sum()) < 0.06  # total variation: sampling noise only
    else:
        assert len(nucleus) > 2048 and len(draws.unique()) > 1500


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    torch.set_num_threads(1)
    path = tiny_lm(tmp_path_factory)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(path).eval(), tok


def _sample(model, tok, prompts, seed, eos_id=None, n=12):
    ids, mask = encode_prompts(tok, prompts, 64, "cpu")
    return sample(model, ids, mask, max_new_tokens=n, temperature=1.0, top_p=1.0,
                  eos_id=tok.eos_token_id if eos_id is None else eos_id, pad_id=tok.pad_token_id,
                  generator=step_generator(seed, 0, 0))


def test_sampling_is_reproducible_from_the_seed_and_independent_of_global_rng(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = ["The movie was", "A much longer prompt about the weather at the beach"]
    a = _sample(model, tok, prompts, seed=1)
    torch.manual_seed(12345)  # the global RNG plays no part
    b = _sample(model, tok, prompts, seed=1)
    c = _sample(model, tok, prompts, seed=2)
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_eos_ends_a_response_and_masks_what_follows(model_and_tokenizer):
    model, tok = model_and_tokenizer
    # Make a frequent token the "EOS" so that some responses end early.
    probe = _sample(model, tok, ["The movie was"] * 8, seed=3)
    eos = int(probe.response_ids[:, :4].flatten().mode().values)
    ro = _sample(model, tok, ["The movie was"] * 8, seed=3, eos_id=eos)
    for row, m, ended in zip(ro.response_ids.tolist(), ro.response_mask.tolist(), ro.ended_with_eos.tolist()):
        n = int(sum(m))
        assert m == [1.0] * n + [0.0] * (len(m) - n)
        if ended:
            assert row[n - 1] == eos and eos not in row[: n - 1]
            assert row[n:] == [tok.pad_token_id] * (len(row) - n)
        else:
            assert n == len(row) and eos not in row
    assert any(ro.ended_with_eos.tolist())


def test_scored_logprobs_match_a_left_padding_free_forward(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ro = _sample(model, tok, ["Hi", "The movie last night was really"], seed=4, n=5)
    with torch.no_grad():
        batched = response_logprobs(model, ro)
        # Row 0 alone, without any left padding: same log-probs (positions skip the padding).
        p = tok("Hi", add_special_tokens=False).input_ids
        r = ro.response_ids[0, : int(ro.response_mask[0].sum())].tolist()
        logits = model(torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) + len(r) - 1]
        alone = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
    assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(batched[0, : len(r)].tolist(), alone.tolist()))
