"""Other trainers' metric names -> the names of docs/METRICS.md.

Each table maps the key a trainer logs to our name. A key not in the table passes through
unchanged (METRICS.md: unknown names are kept), so nothing a trainer logs is lost; when a
trainer logs both a mapped key and a key that already has our name, the mapped key wins
(it is the one whose definition we checked).

Where the formulas differ from METRICS.md, the table says so rather than pretending:

- trl GRPO `kl` is the per-token mean of the k3 estimator `exp(r) - r - 1` (r = ref - policy
  log-ratio), always >= 0; METRICS.md's `kl` is k1. Both are per-token KL estimates with the
  same expectation, so thresholds in nats/token carry over; k3 has lower variance.
- trl RLOO `kl` is the token-weighted mean of k1: exactly METRICS.md `kl`.
- trl `completions/mean_length` counts completion tokens (EOS included, padding excluded):
  our `response_length`. `completions/clipped_ratio` is the share that hit
  max_completion_length: our `truncated_fraction`.
- trl `reward` is the weighted sum of the reward functions *before* group normalisation: our
  `reward` (raw score). RLOO subtracts beta * KL before logging only in its advantages, not in
  the logged `reward`.
- trl `clip_ratio/region_mean` is the share of tokens whose ratio was clipped: `clipfrac`.
- transformers' `loss` is the total loss (policy + beta * KL in GRPO): kept as `loss`, not
  renamed to `policy_loss` (GRPO logs its own `policy_loss` in some modes).
- verl (checked at volcengine/verl b178a3cd, 2026-01): `actor/ppo_kl` is the PPO step size (old
  vs new policy, like our `approx_kl`), NOT the distance to the reference. That distance is
  `actor/kl_loss` when `use_kl_loss` (estimator `kl_loss_type`, default low_var_kl = clamped
  k3, like trl GRPO's) or, with KL in the reward, `actor/reward_kl_penalty` (estimator
  `algorithm.kl_penalty`, default k1: exactly our `kl`); verl before ~0.3 called it
  `critic/kl` (and its coefficient `critic/kl_coeff`, now `actor/reward_kl_penalty_coeff`).
  `critic/score/mean` is the sequence score before the KL penalty (our raw `reward`);
  `response_length/clip_ratio` the share of responses at max_response_length. verl's
  `perf/throughput` is tokens (prompt + response) per second *per GPU*: not our
  `tokens_per_second`, so it passes through under its own name.
- OpenRLHF (checked at OpenRLHF/OpenRLHF 3c3be623, 2026-08; W&B/TensorBoard log `train/<key>`,
  stdout the bare `<key>`, read as `train/<key>`): `train/kl` is the per-token KL to the
  reference with `--algo.kl.estimator` (default k1: our `kl`); `train/ppo_kl` is old vs new
  policy (`approx_kl`); `train/entropy_loss` is the mean token entropy (logged only with
  `--actor.entropy_coef`), our `entropy`; `train/rollout/truncated_rate` is the share cut at
  the generation limit. `train/kl_ctl` and `train/entropy` are no longer logged by current
  OpenRLHF; kept for older logs.
- The trl entries were checked against trl 1.16 (grpo_trainer.py `_metrics[mode][...]`).
"""

from __future__ import annotations

from collections.abc import Mapping

# trl 1.x GRPOTrainer / RLOOTrainer (trl/trainer/grpo_trainer.py, rloo_trainer.py: `self._metrics[mode][...]`,
# plus what transformers.Trainer adds to every log: loss, grad_norm, learning_rate, epoch).
TRL: dict[str, str] = {
    "kl": "kl",
    "reward": "reward",
    "reward_std": "reward_std",
    "entropy": "entropy",
    "completions/mean_length": "response_length",
    "completions/clipped_ratio": "truncated_fraction",
    "clip_ratio/region_mean": "clipfrac",
    "grad_norm": "grad_norm",
    "learning_rate": "lr",
    "step_time": "step_seconds",
}

# verl (verl/trainer/ppo/metric_utils.py, ray_trainer.py, workers/actor/dp_actor.py, workers/fsdp_workers.py).
VERL: dict[str, str] = {
    "actor/ppo_kl": "approx_kl",
    "actor/kl_loss": "kl",
    "actor/reward_kl_penalty": "kl",
    "critic/kl": "kl",  # verl < 0.3
    "actor/kl_coef": "kl_coef",
    "actor/reward_kl_penalty_coeff": "kl_coef",
    "critic/kl_coeff": "kl_coef",  # verl < 0.3
    "actor/entropy": "entropy",
    "actor/pg_loss": "policy_loss",
    "critic/vf_loss": "value_loss",
    "actor/pg_clipfrac": "clipfrac",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "critic/score/mean": "reward",
    "response_length/mean": "response_length",
    "response_length/clip_ratio": "truncated_fraction",
    "timing_s/step": "step_seconds",
}

# OpenRLHF (openrlhf/trainer/ppo_trainer.py, ray/ppo_actor.py, ray/ppo_critic.py; logged under "train/").
OPENRLHF: dict[str, str] = {
    "train/kl": "kl",
    "train/reward": "reward",
    "train/response_length": "response_length",
    "train/policy_loss": "policy_loss",
    "train/critic_loss": "value_loss",
    "train/actor_lr": "lr",
    "train/actor_grad_norm": "grad_norm",
    "train/entropy_loss": "entropy",
    "train/entropy": "entropy",  # older OpenRLHF
    "train/ppo_clip_ratio": "clipfrac",
    "train/ppo_kl": "approx_kl",
    "train/rollout/truncated_rate": "truncated_fraction",
    "train/timing/step_total": "step_seconds",
    "train/kl_ctl": "kl_coef",  # older OpenRLHF
}

TRAINERS: dict[str, dict[str, str]] = {"trl": TRL, "verl": VERL, "openrlhf": OPENRLHF, "rlguard": {}}

# Keys that are bookkeeping, not metrics of the step (transformers' end-of-train summary etc.).
IGNORED_KEYS = frozenset({"epoch", "step", "total_flos", "train_runtime", "train_samples_per_second",
                          "train_steps_per_second", "train_loss", "num_tokens"})


def table_for(trainer: str) -> dict[str, str]:
    """The name table of `trainer` (one of TRAINERS); a clear error for anything else."""
    try:
        return TRAINERS[trainer.lower()]
    except KeyError:
        raise ValueError(f"unknown trainer {trainer!r} for metric names: expected one of "
                         f"{', '.join(sorted(TRAINERS))} (or 'rlguard' for streams already in METRICS.md names)") from None


def _number(value) -> float | None:
    """A metric value as float; None for 'not measured' and for anything that is not a number."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "item"):  # torch / numpy scalars
        try:
            value = value.item()
        except (TypeError, ValueError):
            return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def map_metrics(logs: Mapping[str, object], trainer: str = "trl", *, passthrough: bool = True) -> dict[str, float]:
    """Translate one log record to METRICS.md names.

    Evaluation keys (`eval_` + a mapped key, as transformers prefixes them) become `eval_` + our
    name. Non-numeric values are dropped; NaN/inf are kept (they mean exactly that).
    passthrough: keep keys that have no mapping, under their own name.
    """
    table = table_for(trainer)
    mapped: dict[str, float] = {}
    unmapped: dict[str, float] = {}
    for key, raw in logs.items():
        if key in IGNORED_KEYS:
            continue
        value = _number(raw)
        if value is None:
            continue
        prefix, base = ("eval_", key[5:]) if key.startswith("eval_") else ("", key)
        if base in table:
            mapped[prefix + table[base]] = value
        elif passthrough:
            unmapped[key] = value
    # A mapped key wins over a pass-through key of the same name (see the module docstring).
    return {**unmapped, **mapped}


def has_training_metrics(metrics: Mapping[str, float]) -> bool:
    """True when a mapped record carries at least one step metric (not only eval_ or summary keys)."""
    return any(not k.startswith("eval_") for k in metrics)
