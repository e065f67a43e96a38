"""Gold metrics for the demo: what the policy does NOT optimise, measured on held-out prompts.

The training reward can be gamed; these cannot be gamed by the same trick, so they tell
whether a run really stayed healthy:

    gold_ref_perplexity   perplexity of the responses under the frozen starting model
                          (fluent text ~ the base model's own level; a degenerate loop of one
                          sentence scores LOW under the policy but not necessarily under the
                          reference, and gibberish scores very high)
    gold_distinct_2       distinct token bigrams / all bigrams over the responses
    gold_degenerate       share of responses that are repetitive, empty or gibberish
    gold_repetitive       share with a loop a reader would call one (`repetition`): on words with
                          case and punctuation dropped ("old, old and Old." is old old and old),
                          one word REPEAT_RUN times in a row, a word 3-gram REPEAT_MIN times, a
                          word 2-gram REPEAT_PAIR times, or fewer than half of the 3-grams distinct
    gold_empty            share with fewer than MIN_WORDS words
    gold_gibberish        share whose own perplexity under the frozen starting model is above
                          GIBBERISH_PPL (random tokens; the starting model's answers score 4-50)
    gold_truncated        share that hit the token cap without an end-of-sequence (reported, not
                          counted as degenerate: a 32-token cap truncates most healthy answers too)
    gold_sentiment        mean VADER compound score (the demo's training reward, for reference)

Responses are sampled with a fixed generator seed, so two checkpoints (or two runs) are
compared on the same prompts with the same randomness; only the weights differ.
The evaluator loads the model once and swaps in each checkpoint's trainable weights.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPEAT_MIN = 3       # a word 3-gram seen this often in one response is a loop, not style
REPEAT_PAIR = 4      # a word 2-gram seen this often in ~30 words ("and fun and fun and fun and fun")
REPEAT_RUN = 3       # one word this many times in a row ("old old old"; "had had" is English)
MIN_WORDS = 2        # a response with fewer words than this says nothing (empty)
GIBBERISH_PPL = 200.0  # measured: the starting model's 48 answers score 3.6-50 under it; random tokens ~1e3-1e4
GOLD_SEED = 1234     # fixed sampling seed: every checkpoint answers with the same randomness
GOLD_PROMPTS = Path(__file__).with_name("gold_prompts.jsonl")  # 48 held-out prompts, none trained on

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation dropped: "Old, old." -> ["old", "old"]."""
    return _WORD.findall(text.lower())


def repetition(text: str) -> str | None:
    """Why `text` reads as a loop (None: it does not); see the module docstring."""
    w = words(text)
    run, longest, word = 1, 1, w[0] if w else ""
    for a, b in zip(w, w[1:]):
        run = run + 1 if a == b else 1
        if run > longest:
            longest, word = run, b
    if longest >= REPEAT_RUN:
        return f"{word!r} {longest}x in a row"
    grams = list(zip(w, w[1:], w[2:]))
    if grams:
        gram, n = Counter(grams).most_common(1)[0]
        if n >= REPEAT_MIN:
            return f"{' '.join(gram)!r} {n}x"
    pairs = list(zip(w, w[1:]))
    if pairs:
        pair, n = Counter(pairs).most_common(1)[0]
        if n >= REPEAT_PAIR:
            return f"{' '.join(pair)!r} {n}x"
    if len(grams) >= 4 and len(set(grams)) / len(grams) < 0.5:
        return f"{len(set(grams))} distinct of {len(grams)} word 3-grams"
    return None


def is_repetitive(text: str) -> bool:
    return repetition(text) is not None


def is_empty(text: str) -> bool:
    return len(words(text)) < MIN_WORDS


def sample_flags(text: str, ref_perplexity: float | None = None) -> list[str]:
    """The per-sample verdict shown in the report: [] for a clean answer, else why not.
    `ref_perplexity`: the answer's perplexity under the frozen starting model, when measured."""
    flags = []
    if ref_perplexity is not None and ref_perplexity > GIBBERISH_PPL:
        flags.append(f"gibberish: ref perplexity {ref_perplexity:.0f} > {GIBBERISH_PPL:.0f}")
    if is_empty(text):
        n = len(words(text))
        flags.append(f"empty: {n} word{'' if n == 1 else 's'}")
    why = repetition(text)
    if why:
        flags.append(f"repetitive: {why}")
    return flags


def text_gold(responses: list[str], truncated: list[bool], sentiment: list[float]) -> dict[str, float]:
    """The gold metrics that need only the text (no model); see the module docstring."""
    n = max(len(responses), 1)
    rep = [is_repetitive(r) for r in responses]
    emp = [is_empty(r) for r in responses]
    return {
        "gold_degenerate": sum(a or b for a, b in zip(rep, emp)) / n,
        "gold_repetitive": sum(rep) / n,
        "gold_empty": sum(emp) / n,
        "gold_truncated": sum(bool(t) for t in truncated) / n,
        "gold_sentiment": sum(sentiment) / n if sentiment else 0.0,
    }


@dataclass
class GoldResult:
    """Gold metrics of one policy state, with the responses they were computed from."""

    label: str
    step: int
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)  # {"prompt", "response", "degenerate"}

    def to_dict(self) -> dict:
        return {"label": self.label, "step": self.step, "metrics": self.metrics, "samples": self.samples}


class GoldEvaluator:
    """Loads the policy architecture and the frozen reference once; scores checkpoints.

    `cfg` is the run's TrainConfig (model, use_lora, lengths, chat_template); `prompts` the
    held-out prompts (default: GOLD_PROMPTS, never trained on)."""

    def __init__(self, cfg, prompts: list[str] | None = None, *, batch_size: int = 16,
                 cache_dir: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from rlguard.ppo.models import DTYPES, apply_lora, resolve_model_path
        from rlguard.ppo.prompts import load_texts
        from rlguard.ppo.rewards import SentimentReward

        hf_logging.disable_progress_bar()
        self.cfg = cfg.resolved() if hasattr(cfg, "resolved") else cfg
        self.torch = torch
        self.batch_size = batch_size
        self.prompts = prompts if prompts is not None else load_texts(str(GOLD_PROMPTS))
        path = resolve_model_path(self.cfg.model)
        self.model_path = path
        self.cache_dir = cache_dir  # the starting model's result is kept here (gold_cache.py); None: never
        dtype = DTYPES[self.cfg.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        self.reference = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval().requires_grad_(False)
        policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if self.cfg.use_lora:
            policy = apply_lora(policy, self.cfg, "CAUSAL_LM")
        self.policy = policy.eval()
        # The starting weights, to score "step 0" and to reset between checkpoints.
        from rlguard.ppo.models import trainable_state

        self._initial = trainable_state(self.policy)
        self.sentiment = SentimentReward()

    def load(self, checkpoint: str | Path | None) -> int:
        """Put a checkpoint's policy weights in place (None: the starting model); returns its step."""
        from rlguard.ppo.checkpoint_files import verify_checkpoint
        from rlguard.ppo.models import load_trainable_state
        from rlguard.ppo.state_io import load_tensors

        if checkpoint is None:
            load_trainable_state(self.policy, self._initial, "starting weights")
            return 0
        checkpoint = Path(checkpoint)
        manifest = verify_checkpoint(checkpoint)
        load_trainable_state(self.policy, load_tensors(checkpoint / "policy.safetensors"),
                             f"{checkpoint}/policy.safetensors")
        return int(manifest.get("step", 0))

    def start_key(self) -> str:
        """The cache key of the starting model's result (orchestrator/demo/gold_cache.py)."""
        from rlguard.orchestrator.demo import gold_cache
        from rlguard.ppo import rollout

        code = [Path(__file__), Path(rollout.__file__)]  # what generates and scores the answers
        return gold_cache.start_key(self.model_path, self.cfg, self.prompts, self.batch_size, GOLD_SEED, code)

    def evaluate(self, checkpoint: str | Path | None, label: str = "", keep_samples: int | None = None) -> GoldResult:
        """Gold metrics of one policy state; `samples` holds the first `keep_samples` (None: every)
        held-out answer with its flags and its own reference perplexity."""
        from rlguard.orchestrator.demo import gold_cache

        key = None
        if checkpoint is None and self.cache_dir is not None:
            key = self.start_key()
            hit = gold_cache.load(self.cache_dir, key)
            if hit is not None:
                samples = hit["samples"] if keep_samples is None else hit["samples"][:keep_samples]
                return GoldResult(label=label or "step 0", step=0, metrics=hit["metrics"], samples=samples)
        result = self._evaluate(checkpoint, label)
        if key is not None:
            gold_cache.store(self.cache_dir, key, result.to_dict())
        if keep_samples is not None:
            result.samples = result.samples[:keep_samples]
        return result

    def _evaluate(self, checkpoint: str | Path | None, label: str) -> GoldResult:
        torch = self.torch
        from rlguard.ppo import metrics as M
        from rlguard.ppo.rollout import encode_prompts, response_logprobs, sample, step_generator

        step = self.load(checkpoint)
        cfg = self.cfg
        responses: list[str] = []
        truncated: list[bool] = []
        token_lists: list[list[int]] = []
        ref_lp_sum, ref_tok = 0.0, 0.0
        sample_ppl: list[float] = []
        with torch.no_grad():
            for i in range(0, len(self.prompts), self.batch_size):
                prompts = self.prompts[i:i + self.batch_size]
                ids, mask = encode_prompts(self.tokenizer, prompts, cfg.max_prompt_tokens, "cpu", cfg.chat_template)
                ro = sample(self.policy, ids, mask, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=cfg.top_p, eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id,
                            generator=step_generator(GOLD_SEED, i, 0))
                ref_lp = response_logprobs(self.reference, ro)
                rmask = ro.response_mask
                ref_lp_sum += float((ref_lp * rmask).sum())
                ref_tok += float(rmask.sum())
                row_lp, row_tok = (ref_lp * rmask).sum(dim=1), rmask.sum(dim=1)
                sample_ppl += [math.exp(-float(a) / max(float(b), 1.0)) for a, b in zip(row_lp, row_tok)]
                toks = ro.response_token_lists()
                token_lists += toks
                responses += self.tokenizer.batch_decode(toks, skip_special_tokens=True)
                truncated += [not bool(e) for e in ro.ended_with_eos.tolist()]
        sentiment = self.sentiment(self.prompts, responses)
        metrics = {"gold_ref_perplexity": math.exp(-ref_lp_sum / max(ref_tok, 1.0)),
                   "gold_distinct_2": M.distinct_2(token_lists), **text_gold(responses, truncated, sentiment)}
        samples = []
        for p, r, ppl, t, snt in zip(self.prompts, responses, sample_ppl, truncated, sentiment):
            flags = sample_flags(r, ppl)
            samples.append({"prompt": p, "response": r, "degenerate": bool(flags), "flags": flags,
                            "ref_perplexity": ppl, "truncated": t, "sentiment": snt})
        n = max(len(samples), 1)
        metrics["gold_gibberish"] = sum(1 for x in samples if any(f.startswith("gibberish") for f in x["flags"])) / n
        metrics["gold_degenerate"] = sum(1 for x in samples if x["degenerate"]) / n
        return GoldResult(label=label or f"step {step}", step=step, metrics=metrics, samples=samples)


def pick_checkpoints(checkpoints: list[Path], limit: int) -> list[Path]:
    """At most `limit` checkpoints, evenly spread, always with the last one (the run's end state)."""
    if limit <= 0 or not checkpoints:
        return []
    if len(checkpoints) <= limit:
        return list(checkpoints)
    if limit == 1:
        return [checkpoints[-1]]
    stride = (len(checkpoints) - 1) / (limit - 1)
    idx = sorted({round(i * stride) for i in range(limit)})
    return [checkpoints[i] for i in idx]
