"""Pluggable rewards: one call `reward(prompts, responses) -> list[float]`, raw scores.

Three kinds, chosen by the config string `reward`:
- `sentiment`: VADER compound score of the response, in [-1, 1] (vaderSentiment, offline).
- `module:function`: any importable callable `(prompts, responses) -> list[float]`; its
  result is validated (a list of numbers, one per response) with an error naming it.
- anything else: an HF AutoModelForSequenceClassification id or directory (num_labels=1),
  scoring prompt + response. Its path is kept so the critic can start from its backbone.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class RewardError(ValueError):
    """A reward that cannot be built or that returned something unusable."""


class SentimentReward:
    """VADER compound sentiment of the response alone (the prompt is context, not scored)."""

    name = "sentiment"
    hf_path = None

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(self._analyzer.polarity_scores(r)["compound"]) for r in responses]


class CallableReward:
    """`module:function(prompts, responses) -> list[float]`, validated on every call."""

    hf_path = None

    def __init__(self, spec: str):
        module_name, _, func_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise RewardError(f"reward={spec!r}: cannot import module {module_name!r} ({e})") from None
        fn = getattr(module, func_name, None)
        if not callable(fn):
            raise RewardError(f"reward={spec!r}: {module_name} has no callable {func_name!r}")
        self.name = spec
        self._fn: Callable = fn

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = self._fn(list(prompts), list(responses))
        if isinstance(out, torch.Tensor):
            out = out.detach().flatten().tolist()
        if not isinstance(out, (list, tuple)):
            raise RewardError(f"reward {self.name} returned {type(out).__name__}; expected a list of floats")
        if len(out) != len(responses):
            raise RewardError(f"reward {self.name} returned {len(out)} scores for {len(responses)} responses;"
                              " expected one float per response")
        scores = []
        for i, v in enumerate(out):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RewardError(f"reward {self.name} returned {type(v).__name__} {v!r} at index {i};"
                                  " expected a float")
            scores.append(float(v))
        return scores


class HFReward:
    """A sequence-classification reward model scoring `prompt + response` (last-token logit)."""

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype, max_tokens: int = 512, batch: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as e:
            raise RewardError(f"reward={path!r}: not 'sentiment', not module:function, and not a loadable HF"
                              f" sequence-classification model ({str(e).splitlines()[0]})") from None
        if self.model.config.num_labels != 1:
            raise RewardError(f"reward={path!r}: reward model must have num_labels=1, has {self.model.config.num_labels}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.model.to(device).eval().requires_grad_(False)
        self.device, self.max_tokens, self.batch = device, max_tokens, batch
        self.name = path
        self.hf_path = path

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores: list[float] = []
        texts = [p + r for p, r in zip(prompts, responses)]
        for i in range(0, len(texts), self.batch):
            enc = self.tokenizer(texts[i:i + self.batch], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_tokens).to(self.device)
            logits = self.model(**enc).logits
            scores += logits[:, 0].float().tolist()
        return scores


def build_reward(spec: str, device: torch.device, dtype: torch.dtype):
    """The reward named by the config string (see the module docstring)."""
    if spec == "sentiment":
        return SentimentReward()
    if ":" in spec and not Path(spec).exists() and all(part.isidentifier() for part in spec.split(":")[1:]):
        return CallableReward(spec)
    return HFReward(spec, device, dtype)


def check_scores(scores: list[float], name: str) -> list[float]:
    """Non-finite scores are passed through (the monitors must see them), and logged."""
    bad = sum(1 for s in scores if not math.isfinite(s))
    if bad:
        log.warning("reward %s returned %d non-finite scores out of %d", name, bad, len(scores))
    return scores
