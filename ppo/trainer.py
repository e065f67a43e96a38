"""PPOTrainer: one PPO-RLHF iteration per `train_step()`, readable top to bottom.

    rollout   sample a response per prompt; score tokens under policy, reference, critic;
              raw RM score per response
    rewards   (PPO-max) normalize + clip the score with running stats; per-token KL penalty
    GAE       advantages and returns over response tokens
    optimise  ppo_epochs x minibatches: clipped surrogate (+ ptx) for the policy, clipped
              value loss for the critic, global grad clipping; the first
              critic_pretrain_steps steps update the critic only
    metrics   the names and formulas of docs/METRICS.md (ppo/metrics.py)

Besides the METRICS.md names, each step reports: `critic_pretraining` (1.0 while only the
critic is trained; grad_norm is then 0.0 and the policy loss is evaluated, not applied),
`critic_grad_norm`, `skipped_updates` (optimizer steps skipped on a non-finite gradient
norm), `shaped_reward` (mean score after normalization/clipping), `advantage_mean` (mean GAE
advantage over response tokens, before any whitening: persistently negative means the
policy is being pushed off every token it samples), `ptx_loss` (with ptx),
and the wall-time split `generate_seconds`, `score_seconds`, `optimise_seconds`.

The constraints (kl_coef, clip_range, lr) can be changed between steps by a supervisor
(`set_constraints`), are reported in every step's metrics, and are saved in checkpoints.
With torch.distributed initialised (torchrun), the ranks are one data-parallel run: every rank
takes its slice of each prompt batch, starts from rank 0's weights, steps with the gradients
averaged over ranks, metrics are averaged over ranks, and only rank 0 writes checkpoints
(holding every rank's RNG state); see ppo/distributed.py and docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from rlguard.ppo import metrics as M
from rlguard.ppo import ppo_max as X
from rlguard.ppo.async_checkpoint import CheckpointSnapshot, SnapshotBuffers
from rlguard.ppo.checkpoint_files import CheckpointError, verify_checkpoint
from rlguard.ppo.config import ConfigError, TrainConfig
from rlguard.ppo.distributed import (
    all_reduce_gradients,
    broadcast_parameters,
    gather_to_all,
    mean_over_ranks,
    rank_and_world,
)
from rlguard.ppo.models import (
    DTYPES,
    build_models,
    load_trainable_state,
    reference_context,
    resolve_device,
    trainable_state,
)
from rlguard.ppo.prompts import DataCursor, load_texts
from rlguard.ppo.rewards import build_reward, check_scores
from rlguard.ppo.rollout import (
    encode_prompts,
    response_logprobs,
    response_values,
    sample,
    select,
    step_generator,
)
from rlguard.ppo.state_io import (
    capture_rng,
    load_optimizer,
    load_tensors,
    optimizer_payload,
    read_json,
    restore_rng,
)

log = logging.getLogger(__name__)
EVAL_SALT = 1  # eval sampling stream, disjoint from the training stream (salt 0)
SHUFFLE_SALT = 2


def _adamw(params: list, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where torch supports it (3x faster on CPU for a 135M model: the optimizer
    step is a large share of a PPO step there)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class PPOTrainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None = None):
        self.cfg = cfg.resolved()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        torch.manual_seed(self.cfg.seed)  # init of anything random (e.g. LoRA A matrices)
        self.rank, self.world = rank_and_world()
        self.step = 0

        # Data
        self.cursor = DataCursor(load_texts(self.cfg.prompts), self.cfg.seed, self.rank, self.world)
        self.eval_prompts = load_texts(self.cfg.eval_prompts, builtin_name="eval_prompts.jsonl")
        self.ptx_cursor = None
        if self.cfg.ptx_coef > 0:
            self.ptx_cursor = DataCursor(load_texts(self.cfg.ptx_data, field="text"), self.cfg.seed + 1,
                                         self.rank, self.world)

        # Models and reward
        self.reward_fn = build_reward(self.cfg.reward, resolve_device(self.cfg.device), DTYPES[self.cfg.dtype])
        self.tokenizer, self.policy, self.reference, self.critic, self.device = build_models(
            self.cfg, self.reward_fn.hf_path)
        if self.cfg.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"chat_template=true but the tokenizer of {self.cfg.model} has no chat template;"
                              " set chat_template=false")

        # Optimisers (lr set every step from the constraint and the warmup schedule)
        broadcast_parameters(self.policy, self.critic)  # identical replicas, whatever each rank's init
        self.policy_params = [p for p in self.policy.parameters() if p.requires_grad]
        self.critic_params = [p for p in self.critic.parameters() if p.requires_grad]
        self.policy_opt = _adamw(self.policy_params, self.cfg.lr, self.cfg.weight_decay)
        self.critic_opt = _adamw(self.critic_params, self.cfg.critic_lr, self.cfg.weight_decay)

        self.reward_stats = X.RunningMeanStd()
        self._constraints = {"kl_coef": self.cfg.kl_coef, "clip_range": self.cfg.clip_range, "lr": self.cfg.lr}
        self._samples: deque[dict] = deque(maxlen=self.cfg.keep_samples)
        self.last_samples: list[dict] = []  # every sample of the latest step (for samples.jsonl)
        self.on_step: list[Callable[[int, dict], None]] = []  # called after each step with (step, metrics)
        self.last_metrics: dict[str, float] = {}
        self._timings: dict[str, float] = {}  # where the step's wall time went (rollout phases)
        self._snapshot_buffers = SnapshotBuffers()  # reused CPU memory for checkpoint snapshots

    @property
    def recent_samples(self) -> list[dict]:
        """The last `keep_samples` samples, oldest first: {"step", "prompt", "response", "reward"}."""
        return list(self._samples)

    # ------------------------------------------------------------------ constraints
    def constraints(self) -> dict[str, float]:
        return dict(self._constraints)

    def set_constraints(self, kl_coef: float | None = None, clip_range: float | None = None,
                        lr: float | None = None) -> dict[str, float]:
        """Change constraint values; they take effect at the next train_step."""
        for name, value, lowest in (("kl_coef", kl_coef, 0.0), ("clip_range", clip_range, None), ("lr", lr, None)):
            if value is None:
                continue
            value = float(value)
            ok = value == value and value != float("inf") and (value >= lowest if lowest is not None else value > 0)
            if not ok:
                need = ">= 0" if lowest is not None else "> 0"
                raise ValueError(f"set_constraints: {name}={value!r} is invalid; {name} must be a finite number {need}")
            self._constraints[name] = value
        return self.constraints()

    def skip_batches(self, k: int) -> None:
        """Advance the prompt cursor by k batches (skip data implicated in a collapse)."""
        if k < 0:
            raise ValueError(f"skip_batches: k={k} must be >= 0")
        self.cursor.skip(k, self.cfg.batch_size)

    def _lr_factor(self) -> float:
        if self.cfg.warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.step + 1) / self.cfg.warmup_steps)

    # ------------------------------------------------------------------ rollout
    @property
    def shared_critic(self) -> bool:
        """The critic is a value head on the policy's features (no backbone of its own)."""
        return self.cfg.critic == "shared_backbone"

    @torch.no_grad()
    def _rollout(self, prompts: list[str], generator: torch.Generator, with_values: bool = False):
        ids, mask = encode_prompts(self.tokenizer, prompts, self.cfg.max_prompt_tokens, self.device,
                                   self.cfg.chat_template)
        t0 = time.perf_counter()
        ro = sample(self.policy, ids, mask, max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p, eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id,
                    generator=generator)
        self._timings["generate_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        logprobs, entropy, features = response_logprobs(self.policy, ro, with_entropy=True,
                                                        with_features=with_values and self.shared_critic)
        values = None
        if with_values:
            values = self.critic(features) if self.shared_critic else response_values(self.critic, ro)
            values = values * ro.response_mask
        ctx, ref_model = reference_context(self.policy, self.reference)
        with ctx:
            ref_logprobs = response_logprobs(ref_model, ro)
        responses = self.tokenizer.batch_decode(ro.response_token_lists(), skip_special_tokens=True)
        scores = check_scores(self.reward_fn(prompts, responses), getattr(self.reward_fn, "name", "reward"))
        self._timings["score_seconds"] = time.perf_counter() - t0
        # The scores live with the log-probs (token_rewards/GAE combine them); float32 whatever
        # the model dtype, so that normalization and the losses are not computed in bf16.
        scores_t = torch.tensor(scores, dtype=torch.float32, device=logprobs.device)
        return ro, responses, scores_t, logprobs, ref_logprobs, entropy, values, features

    def _rollout_metrics(self, ro, scores, logprobs, ref_logprobs, entropy) -> dict[str, float]:
        mask = ro.response_mask
        return {
            **M.reward_stats(scores),
            **M.kl_stats(logprobs, ref_logprobs, mask),
            "perplexity": M.perplexity(logprobs, mask),
            "ref_perplexity": M.perplexity(ref_logprobs, mask),
            "response_length": M.response_length(mask),
            "truncated_fraction": M.truncated_fraction(ro.ended_with_eos),
            "entropy": M.mean_entropy(entropy, mask),
            "distinct_2": M.distinct_2(ro.response_token_lists()),
        }

    # ------------------------------------------------------------------ one PPO iteration
    def train_step(self) -> dict[str, float]:
        cfg, t0 = self.cfg, time.perf_counter()
        kl_coef, clip_range = self._constraints["kl_coef"], self._constraints["clip_range"]
        lr = self._constraints["lr"] * self._lr_factor()
        for g in self.policy_opt.param_groups:
            g["lr"] = lr
        for g in self.critic_opt.param_groups:
            g["lr"] = cfg.critic_lr * self._lr_factor()

        # 1. Rollout
        prompts = self.cursor.next_batch(cfg.batch_size)
        generator = step_generator(cfg.seed, self.step, self.rank)
        ro, responses, scores, old_logprobs, ref_logprobs, entropy, old_values, features = self._rollout(
            prompts, generator, with_values=True)
        mask = ro.response_mask

        # 2. Rewards: normalize + clip the score (PPO-max), per-token KL penalty
        shaped = scores.clone()
        if cfg.reward_normalize:
            shaped = X.normalize_and_clip_rewards(shaped, self.reward_stats, cfg.reward_clip)
        elif cfg.reward_clip is not None:
            shaped = shaped.clamp(-cfg.reward_clip, cfg.reward_clip)
        rewards = X.token_rewards(shaped, old_logprobs, ref_logprobs, mask, kl_coef, cfg.kl_penalty_per_token)

        # 3. GAE
        advantages, returns = X.gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)
        advantage_mean = float(X.masked_mean(advantages, mask))
        if cfg.advantage_normalize:
            advantages = X.whiten_advantages(advantages, mask)

        # 4. Optimise
        critic_only = self.step < cfg.critic_pretrain_steps
        t_opt = time.perf_counter()
        stats = self._optimise(ro, old_logprobs, old_values, advantages, returns, clip_range, critic_only, features)

        # 5. Metrics
        seconds = time.perf_counter() - t0
        m = self._rollout_metrics(ro, scores, old_logprobs, ref_logprobs, entropy)
        m.update(stats)
        m.update({"lr": lr, "kl_coef": kl_coef, "clip_range": clip_range, "step_seconds": seconds,
                  "tokens_per_second": float(mask.sum()) / seconds if seconds > 0 else 0.0,
                  "critic_pretraining": 1.0 if critic_only else 0.0, "shaped_reward": float(shaped.mean()),
                  "advantage_mean": advantage_mean,
                  "optimise_seconds": time.perf_counter() - t_opt, **self._timings})
        m = mean_over_ranks(m, self.device)
        # Steps are counted from 1: the event of step N describes the N-th iteration and the
        # checkpoint "step-N" holds the state right after it (a resume from it continues at N+1).
        self.step += 1
        self.last_samples = [{"step": self.step, "prompt": p, "response": r, "reward": score}
                             for p, r, score in zip(prompts, responses, scores.tolist())]
        self._samples.extend(self.last_samples)
        self.last_metrics = m
        for callback in self.on_step:
            callback(self.step, m)
        return m

    def _optimise(self, ro, old_logprobs, old_values, advantages, returns, clip_range, critic_only,
                  features=None) -> dict:
        cfg = self.cfg
        n = ro.response_ids.shape[0]
        shuffle = step_generator(cfg.seed, self.step, self.rank, salt=SHUFFLE_SALT)
        value_clip = cfg.value_clip if cfg.value_clip_enabled else None
        acc = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [], "grad_norm": [],
               "critic_grad_norm": [], "ptx_loss": []}
        skipped = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=shuffle).to(self.device)  # CPU generator, device index
            for start in range(0, n, cfg.minibatch_size):
                idx = order[start:start + cfg.minibatch_size]
                mb = select(ro, idx)
                mb_mask = mb.response_mask

                # Policy: clipped surrogate (+ ptx). In critic pretraining the policy has not
                # moved, so its log-probs are the rollout's (ratio 1): the loss is reported
                # without a forward pass and no step is taken.
                if critic_only:
                    pg_loss, clipfrac, approx_kl = X.clipped_surrogate_loss(
                        old_logprobs[idx], old_logprobs[idx], advantages[idx], mb_mask, clip_range)
                    acc["grad_norm"].append(0.0)
                else:
                    logprobs = response_logprobs(self.policy, mb)
                    pg_loss, clipfrac, approx_kl = X.clipped_surrogate_loss(
                        logprobs, old_logprobs[idx], advantages[idx], mb_mask, clip_range)
                    loss = pg_loss
                    if self.ptx_cursor is not None:
                        ptx = self._ptx_loss()
                        acc["ptx_loss"].append(ptx.item())
                        loss = loss + cfg.ptx_coef * ptx
                    skipped += not self._apply(loss, self.policy_opt, self.policy_params, acc["grad_norm"])
                acc["policy_loss"].append(pg_loss.item())
                acc["clipfrac"].append(float(clipfrac))
                acc["approx_kl"].append(float(approx_kl))

                # Critic: (clipped) value loss. A shared-backbone head reads the rollout's features
                # (the policy's hidden states when the values were estimated): no forward pass.
                values = self.critic(features[idx]) if self.shared_critic else response_values(self.critic, mb)
                v_loss = X.value_loss(values, old_values[idx], returns[idx], mb_mask, value_clip)
                skipped += not self._apply(v_loss, self.critic_opt, self.critic_params, acc["critic_grad_norm"])
                acc["value_loss"].append(v_loss.item())
        out = {k: sum(v) / len(v) for k, v in acc.items() if v}
        out["skipped_updates"] = float(skipped)
        return out

    def _apply(self, loss, opt, params, norms: list) -> bool:
        """Backward, global grad norm (clipped if configured), step. A non-finite gradient norm
        skips the update (the NaN still shows in grad_norm): one bad batch must not poison the
        weights before the supervisor can act. Returns whether the step was taken."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Data parallel: every rank steps with the mean gradient over ranks, so the replicas stay
        # identical (and so do the norm and the skip decision below).
        all_reduce_gradients(params)
        norm = X.global_grad_norm(params)
        norms.append(float(norm))
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            return False
        if self.cfg.grad_clip is not None:
            X.clip_gradients_to(params, self.cfg.grad_clip, norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return True

    def _ptx_loss(self) -> torch.Tensor:
        texts = self.ptx_cursor.next_batch(self.cfg.ptx_batch_size)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.cfg.max_prompt_tokens + self.cfg.max_new_tokens).to(self.device)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        from rlguard.ppo.models import position_ids_from_mask

        out = self.policy(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                          position_ids=position_ids_from_mask(enc["attention_mask"]), labels=labels)
        return out.loss

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """eval_* metrics on the fixed eval prompts, sampled with a fixed seed (comparable across
        steps: only the policy changes between two evaluations)."""
        cfg = self.cfg
        all_scores: list[float] = []
        kl_rows, ref_lp_sum, ref_tok, lengths, token_lists = [], 0.0, 0.0, [], []
        for i in range(0, len(self.eval_prompts), cfg.batch_size):
            prompts = self.eval_prompts[i:i + cfg.batch_size]
            g = step_generator(cfg.seed, i, 0, salt=EVAL_SALT)
            ro, _, scores, logprobs, ref_logprobs, *_ = self._rollout(prompts, g)
            mask = ro.response_mask
            all_scores += scores.tolist()
            kl_rows.append(((logprobs - ref_logprobs) * mask).sum(1) / mask.sum(1).clamp(min=1))
            ref_lp_sum += float((ref_logprobs * mask).sum())
            ref_tok += float(mask.sum())
            lengths.append(mask.sum(1))
            token_lists += ro.response_token_lists()
        dist = M.reward_distribution(all_scores)
        out = {
            "eval_reward": sum(all_scores) / len(all_scores),
            "eval_kl": float(torch.cat(kl_rows).double().mean()),
            "eval_ref_perplexity": float(torch.exp(torch.tensor(-ref_lp_sum / max(ref_tok, 1.0), dtype=torch.float64))),
            "eval_response_length": float(torch.cat(lengths).double().mean()),
            "eval_distinct_2": M.distinct_2(token_lists),
            "eval_reward_skew": dist["reward_skew"],
            "eval_reward_p90": dist["reward_p90"],
        }
        return mean_over_ranks(out, self.device)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_snapshot(self) -> CheckpointSnapshot | None:
        """The full training state right now, copied (tensors to CPU) so that training can go on
        while a thread writes it (ppo/async_checkpoint.py). Collective with torch.distributed:
        every rank must call it at the same step (each rank's RNG state is gathered); rank 0
        gets the snapshot, the other ranks None."""
        rng_json, rng_tensors = capture_rng()
        per_rank = gather_to_all((rng_json, rng_tensors))
        if self.rank != 0:
            return None
        buffers = self._snapshot_buffers
        buffers.begin()

        def copy_all(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: buffers.copy(f"{prefix}/{k}", v) for k, v in tensors.items()}

        tensors = {"policy": copy_all("policy", trainable_state(self.policy)),
                   "critic": copy_all("critic", trainable_state(self.critic)),
                   "rng": copy_all("rng", rng_tensors)}
        # Every rank's RNG (ranks draw different numbers): a restore puts each rank back exactly.
        for r, (_, rank_tensors) in enumerate(per_rank[1:], start=1):
            tensors[f"rng_rank{r}"] = copy_all(f"rng_rank{r}", rank_tensors)
        state = {
            "step": self.step,
            "world": self.world,
            "constraints": self.constraints(),
            "reward_stats": self.reward_stats.state_dict(),
            "cursor": self.cursor.state_dict(),
            "ptx_cursor": self.ptx_cursor.state_dict() if self.ptx_cursor else None,
            "rng": rng_json,
            "rng_ranks": [js for js, _ in per_rank],
            "recent_samples": self.recent_samples,
            "lr_schedule": {"warmup_steps": self.cfg.warmup_steps, "base_lr": self._constraints["lr"]},
        }
        optimizers = {name: optimizer_payload(opt, lambda k, t, name=name: buffers.copy(f"{name}/{k}", t))
                      for name, opt in (("policy_optimizer", self.policy_opt), ("critic_optimizer", self.critic_opt))}
        return buffers.finish(CheckpointSnapshot(
            step=self.step, tensors=tensors, optimizers=optimizers,
            json_files={"trainer_state.json": state, "config.json": self.cfg.model_dump()},
            metrics=dict(self.last_metrics), constraints=self.constraints(),
            meta={"preset": self.cfg.preset, "model": self.cfg.model, "use_lora": self.cfg.use_lora}))

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the full training state to directory `path` atomically, synchronously (rank 0
        writes; collective with torch.distributed, see checkpoint_snapshot)."""
        path = Path(path)
        snapshot = self.checkpoint_snapshot()
        return snapshot.write(path) if snapshot is not None else path

    def _restore_rng(self, path: Path, state: dict) -> None:
        """This rank's RNG state: its own if the checkpoint has it (same world size), else rank 0's."""
        ranks = state.get("rng_ranks") or []
        if self.rank > 0 and self.rank < len(ranks) and (path / f"rng_rank{self.rank}.safetensors").is_file():
            restore_rng(ranks[self.rank], load_tensors(path / f"rng_rank{self.rank}.safetensors"))
        else:
            restore_rng(state["rng"], load_tensors(path / "rng.safetensors"))

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the full training state; the checksums are verified before anything is read."""
        path = Path(path)
        manifest = verify_checkpoint(path)
        try:
            saved_cfg = read_json(path / "config.json")
            for key in ("model", "use_lora", "critic", "prompts"):
                saved = saved_cfg.get(key, TrainConfig.model_fields[key].default)  # older checkpoints lack new keys
                if saved != getattr(self.cfg, key):
                    raise CheckpointError(path, f"was written with {key}={saved!r}, this run has"
                                                f" {key}={getattr(self.cfg, key)!r}: resume with the same {key}")
            state = read_json(path / "trainer_state.json")
            load_trainable_state(self.policy, load_tensors(path / "policy.safetensors"), f"{path}/policy.safetensors")
            load_trainable_state(self.critic, load_tensors(path / "critic.safetensors"), f"{path}/critic.safetensors")
            load_optimizer(self.policy_opt, path, "policy_optimizer")
            load_optimizer(self.critic_opt, path, "critic_optimizer")
            self._restore_rng(path, state)
        except CheckpointError:
            raise
        except (KeyError, ValueError, OSError, TypeError, IndexError) as e:
            raise CheckpointError(path, f"unreadable training state ({type(e).__name__}: {e})") from None
        self.step = int(state["step"])
        self._constraints = {k: float(v) for k, v in state["constraints"].items()}
        self.reward_stats.load_state_dict(state["reward_stats"])
        self.cursor.load_state_dict(state["cursor"])
        if self.ptx_cursor is not None and state.get("ptx_cursor"):
            self.ptx_cursor.load_state_dict(state["ptx_cursor"])
        self._samples.clear()
        self._samples.extend(state.get("recent_samples", []))
        self.last_samples = []
        self.last_metrics = dict(manifest.get("metrics", {}))
