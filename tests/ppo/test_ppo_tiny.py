"""ppo/tiny.py: tiny HF model directories that load with the Auto classes, cached by content."""

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlguard.ppo.tiny import build_tiny_lm, build_tiny_reward_model


def test_tiny_lm_and_reward_model_load_and_share_a_tokenizer(tmp_path):
    lm = build_tiny_lm(tmp_path / "lm")
    rm = build_tiny_reward_model(tmp_path / "rm")
    tok = AutoTokenizer.from_pretrained(lm)
    assert tok.eos_token and tok.pad_token and tok.eos_token_id != tok.pad_token_id
    text = "The movie was really good, naïve café!"
    assert tok.decode(tok(text).input_ids) == text  # byte-level: anything round-trips
    assert AutoTokenizer.from_pretrained(rm).get_vocab() == tok.get_vocab()
    model = AutoModelForCausalLM.from_pretrained(lm)
    assert model.config.vocab_size == len(tok)
    assert model(**tok(["hello there"], return_tensors="pt")).logits.shape[-1] == len(tok)
    seq = AutoModelForSequenceClassification.from_pretrained(rm)
    assert seq.config.num_labels == 1


def test_builds_are_deterministic_cached_and_seed_dependent(tmp_path):
    a = build_tiny_lm(tmp_path / "a", seed=0)
    b = build_tiny_lm(tmp_path / "b", seed=0)
    c = build_tiny_lm(tmp_path / "c", seed=5)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    build_tiny_lm(tmp_path / "a", seed=0)  # already there: untouched
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
