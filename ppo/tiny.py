"""Tiny HF models with random weights, built offline from a config: the test fixtures.

Nothing can be downloaded in tests, so every test that needs "a real model" builds one here:
a normal Hugging Face model directory (config.json, model.safetensors, tokenizer files) that
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load like any other.

- The tokenizer is a real fast tokenizer: a byte-level BPE trained (in milliseconds, with the
  `tokenizers` library) on the built-in prompts plus a word list rich in sentiment words, so
  that decoded samples are word-like text a sentiment reward reacts to. Byte-level means any
  string round-trips; there is no unknown token.
- Special tokens: `<|endoftext|>` (eos), `<|pad|>` (pad, distinct from eos so masks are
  unambiguous), `<|bos|>` (never added automatically).
- The model is a LlamaForCausalLM (or LlamaForSequenceClassification with num_labels=1 for
  the reward model) with random weights from a seeded generator.

Builds are cached by content: the first call for a given (kind, seed, sizes) builds into
`$RLGUARD_CACHE/tiny/<key>` (default `~/.cache/rlguard/tiny`) and later calls copy those
files without importing transformers; a target directory that already holds the same build
is left as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

# Bump when the build recipe changes, so stale cache entries are not reused.
_RECIPE_VERSION = 1
_MARKER = ".rlguard-tiny.json"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"

# Words the tokenizer learns as whole tokens (merges), on top of the prompts. Sentiment words
# on both sides, so a VADER reward has something to find in random-model samples.
_WORDS = """
good great excellent amazing wonderful happy love lovely nice fantastic perfect best beautiful
fun enjoy enjoyed delight delightful pleasant awesome brilliant glad joy fine cool sweet kind
bad terrible awful horrible sad hate worst boring ugly poor angry annoying disappointing
disappointed broken slow rude dirty painful nasty wrong fail failed mess
the a an and but or so very really quite not never always it was is were be been this that
i you we they he she my our your their me us them to of in on at for with from by about
day night time people place food movie music book friend family home work city team show
""".split()


def _cache_root() -> Path:
    # Same variable as ppo/bundled.py: one cache root for everything rlguard builds.
    base = os.environ.get("RLGUARD_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "rlguard"
    return root / "tiny"


def _training_corpus() -> list[str]:
    data = Path(__file__).parent / "data"
    lines = []
    for name in ("prompts.jsonl", "eval_prompts.jsonl"):
        for line in (data / name).read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line)["prompt"])
    # Repeat the word list so its words win the merge counts over rare prompt fragments.
    lines += [" ".join(_WORDS)] * 20
    return lines


def _build_tokenizer(vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, BOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        model_max_length=512,
        padding_side="left",
    )


def _llama_config(tokenizer, *, layers: int, hidden: int, num_labels: int | None):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        num_key_value_heads=max(1, hidden // 16),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    return LlamaConfig(**kwargs)


def _build(out: Path, *, kind: str, seed: int, vocab: int, layers: int, hidden: int) -> None:
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    tokenizer = _build_tokenizer(vocab)
    # fork_rng: building a fixture must not move the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "lm":
            model = LlamaForCausalLM(_llama_config(tokenizer, layers=layers, hidden=hidden, num_labels=None))
        else:
            config = _llama_config(tokenizer, layers=layers, hidden=hidden, num_labels=1)
            model = LlamaForSequenceClassification(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_cached(path, *, kind: str, seed: int, vocab: int, layers: int, hidden: int) -> Path:
    if vocab < 300:
        raise ValueError(f"vocab={vocab} is too small: a byte-level BPE needs > 259 tokens; use vocab >= 300")
    spec = {"recipe": _RECIPE_VERSION, "kind": kind, "seed": seed, "vocab": vocab, "layers": layers,
            "hidden": hidden, "words": hashlib.sha256(json.dumps(_training_corpus()).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    target = Path(path)
    marker = target / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("key") == key:
                return target
        except (OSError, json.JSONDecodeError):
            pass  # rebuild below
    cached = _cache_root() / f"{kind}-{key}"
    if not (cached / _MARKER).is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.parent / f".tmp-{cached.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            _build(tmp, kind=kind, seed=seed, vocab=vocab, layers=layers, hidden=hidden)
            (tmp / _MARKER).write_text(json.dumps({"key": key, "spec": spec}))
            try:
                os.rename(tmp, cached)
            except OSError:
                pass  # another process built the same entry first: theirs is identical
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for f in cached.iterdir():
        if f.name != _MARKER:
            shutil.copy2(f, target / f.name)
    shutil.copy2(cached / _MARKER, marker)  # last: marks the copy complete
    return target


def build_tiny_lm(path, *, seed: int = 0, vocab: int = 512, layers: int = 2, hidden: int = 64) -> Path:
    """Write a tiny random LlamaForCausalLM + fast tokenizer to `path`; return `path`."""
    return _build_cached(path, kind="lm", seed=seed, vocab=vocab, layers=layers, hidden=hidden)


def build_tiny_reward_model(path, *, seed: int = 1, vocab: int = 512, layers: int = 2, hidden: int = 64) -> Path:
    """Write a tiny random LlamaForSequenceClassification (num_labels=1) with the same tokenizer
    as `build_tiny_lm(vocab=vocab)`; return `path`."""
    return _build_cached(path, kind="rm", seed=seed, vocab=vocab, layers=layers, hidden=hidden)
