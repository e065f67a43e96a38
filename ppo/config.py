"""`TrainConfig`: every knob of the PPO-max trainer, one typed config, a description per field.

Loaded from an optional YAML file plus `key=value` overrides (dotted keys, values parsed as
YAML scalars: `--set lr=1e-6 --set use_lora=true`). Unknown keys and bad values raise
`ConfigError` with a one-line message naming the key and what is allowed; the CLI prints it
and exits 2.

Presets: `preset: ppo_max` (default), `ppo_max_paper` or `vanilla` sets the defaults of the
trick flags (the fields listed in PRESETS); a flag given explicitly in the file or an override
wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlguard.monitors.describe import as_text, describe_fields


class ConfigError(ValueError):
    """Bad training config; the message is one line that names the key and the fix."""


# The trick flags each preset sets (docs/PPO-MAX.md, Fig. 5 of the paper).
# - "ppo_max_paper": the paper's list verbatim.
# - "ppo_max" (default): that list plus advantage whitening. The paper drops whitening, but at
#   the learning rates where guardrails matter (1e-4..2e-4 on SmolLM2, bench/notes/ppo_bench.md)
#   the list alone drifts into high-entropy text on every seed measured: the per-token KL penalty
#   makes most returns negative, the clipped critic lags, and advantages that share a negative
#   sign push probability off every sampled token. Whitening removes the shared sign.
# - "vanilla": plain PPO-clip, the KL penalty charged once per sequence (so a tightened kl_coef
#   still acts).
_PAPER_LIST: dict[str, Any] = {
    "kl_penalty_per_token": True,
    "reward_normalize": True,
    "reward_clip": 0.3,
    "value_clip_enabled": True,
    "critic_pretrain_steps": 5,
    "grad_clip": 1.0,
    "advantage_normalize": False,
}
PRESETS: dict[str, dict[str, Any]] = {
    "ppo_max": {**_PAPER_LIST, "advantage_normalize": True},
    "ppo_max_paper": _PAPER_LIST,
    "vanilla": {
        "kl_penalty_per_token": False,
        "reward_normalize": False,
        "reward_clip": None,
        "value_clip_enabled": False,
        "critic_pretrain_steps": 0,
        "grad_clip": None,
        "advantage_normalize": False,
    },
}
_FROM_PRESET = "from preset"
# A linear head on frozen features learns from zero and needs a larger step than a whole
# backbone initialised from a trained model.
CRITIC_LR_DEFAULT = {"separate": 3e-5, "shared_backbone": 1e-4}


class TrainConfig(BaseModel):
    """PPO-RLHF training run. Units are in the names where they are not obvious."""

    # allow_inf_nan=False: `--set lr=.inf` (or inf, nan) is a float to YAML; no field means it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # --- what to train -------------------------------------------------------------------
    preset: Literal["ppo_max", "ppo_max_paper", "vanilla"] = Field(
        "ppo_max", description="sets the defaults of the trick flags: ppo_max (the paper's PPO-max list plus"
                               " advantage whitening), ppo_max_paper (the list verbatim) or vanilla PPO-clip")
    model: str = Field(
        "bundled", description="policy: HF model id or local directory; 'bundled' = the shipped SmolLM2-135M")
    reward: str = Field(
        "sentiment",
        description="'sentiment' (VADER compound of the response), 'module:function(prompts, responses)"
                    " -> list[float]', or an HF sequence-classification model id/directory")
    prompts: str = Field("builtin", description="training prompts: .jsonl with a 'prompt' field, .txt one per line, or 'builtin'")
    eval_prompts: str = Field("builtin", description="held-out eval prompts, same formats; 'builtin' = the shipped eval set")

    # --- schedule --------------------------------------------------------------------------
    steps: int = Field(100, ge=0, description="PPO iterations (rollout + optimisation) to run in total")
    seed: int = Field(0, description="seeds data order, sampling and init: same seed + config = same run")
    batch_size: int = Field(8, ge=1, description="prompts per rollout (per rank)")
    minibatch_size: int = Field(4, ge=1, description="responses per optimizer step; must divide batch_size")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout (a small, on-policy buffer per PPO-max)")
    checkpoint_every: int = Field(10, ge=0, description="write a checkpoint every N steps (0 = only at the end)")
    checkpoint_start: bool = Field(
        True, description="under the supervisor, with checkpoint_every > 0: also write the starting state as step 0,"
                          " so that a policy broken by its very first updates still has a healthy rollback target")
    async_checkpoint: bool = Field(
        True, description="the worker writes checkpoints on a background thread from a snapshot taken at the step"
                          " boundary (training blocks only for the copy); false = write synchronously")
    eval_every: int = Field(10, ge=0, description="run evaluate() every N steps (0 = never)")
    keep_samples: int = Field(32, ge=0, description="how many recent samples recent_samples keeps")

    # --- generation ------------------------------------------------------------------------
    max_new_tokens: int = Field(32, ge=1, description="generation limit per response (tokens)")
    max_prompt_tokens: int = Field(128, ge=1, description="prompts are truncated from the left to this many tokens")
    chat_template: bool = Field(
        False, description="wrap each prompt as a user turn with the tokenizer's chat template (instruct models)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature (paper: 0.8)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling mass (paper: 0.9)")

    # --- optimisation ----------------------------------------------------------------------
    lr: float = Field(1e-5, gt=0, description="policy learning rate (a constraint: the supervisor may lower it)")
    critic_lr: float | None = Field(
        None, gt=0, description="critic learning rate (null = 3e-5 for a separate critic, 1e-4 for a value head on the"
                                " policy's backbone)")
    warmup_steps: int = Field(0, ge=0, description="linear lr warmup over the first N PPO steps (paper: 10% of steps)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay, policy and critic")
    kl_coef: float = Field(0.05, ge=0, description="KL penalty coefficient eta (a constraint; paper Fig. 7: 0.05)")
    clip_range: float = Field(0.2, gt=0, description="PPO ratio clip eps (a constraint; paper: 0.2)")
    value_clip: float = Field(0.2, gt=0, description="value-loss clip range, used when value_clip_enabled")
    gamma: float = Field(1.0, ge=0, le=1, description="discount (paper: 1)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (paper text 0.9, its code 0.95)")

    # --- PPO-max trick flags (None = take the preset's value) --------------------------------
    kl_penalty_per_token: bool | None = Field(
        None, description="KL penalty at every response token (True) or summed at the last token (False)")
    reward_normalize: bool | None = Field(None, description="normalize RM scores with running mean/std")
    reward_clip: float | None = Field(
        None, gt=0, description="clip normalized rewards to [-d, d] (paper: 0.3 stable, 0.8 collapsed); null = no clip")
    value_clip_enabled: bool | None = Field(None, description="clipped value loss 0.5*max((V-R)^2, (Vclip-R)^2)")
    critic_pretrain_steps: int | None = Field(
        None, ge=0, description="first N steps update the critic only (policy frozen)")
    grad_clip: float | None = Field(None, gt=0, description="global gradient-norm clip (paper: 1.0); null = off")
    advantage_normalize: bool | None = Field(
        None, description="whiten advantages over each batch's response tokens (OpenRLHF's default; on in ppo_max,"
                          " off in ppo_max_paper: the paper keeps only reward-level normalization)")
    ptx_coef: float = Field(0.0, ge=0, description="weight of the pretraining LM loss mixed in (PPO-ptx); 0 = off")
    ptx_data: str | None = Field(None, description="text for the ptx loss: .txt (one per line) or .jsonl with 'text'")
    ptx_batch_size: int = Field(4, ge=1, description="ptx texts per optimizer step")

    # --- models ----------------------------------------------------------------------------
    critic: Literal["separate", "shared_backbone"] = Field(
        "separate",
        description="separate: the critic is a second transformer backbone + value head (PPO-max; from the reward"
                    " model when it is an HF classifier); shared_backbone: a value head on the policy's own final"
                    " hidden states from the rollout pass, trained alone (no second backbone: about half the"
                    " compute and memory, a weaker critic)")
    use_lora: bool = Field(False, description="train LoRA adapters (peft) instead of all weights, policy and critic")
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    lora_target_modules: list[str] | None = Field(
        None, description="modules to adapt (null = peft's default for the architecture)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model weights dtype")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads (0 = torch's default)")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size % self.minibatch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} must divide batch_size={self.batch_size}")
        if self.ptx_coef > 0 and not self.ptx_data:
            raise ValueError("ptx_coef > 0 needs ptx_data (a .txt or .jsonl text file)")
        return self

    # The value in force after applying the preset.
    def flag(self, name: str):
        value = getattr(self, name)
        if value is None and name in PRESETS[self.preset] and name not in self.model_fields_set:
            return PRESETS[self.preset][name]
        return value

    def resolved(self) -> TrainConfig:
        """A copy with every preset-controlled flag filled in (what the trainer uses)."""
        data = self.model_dump()
        for name in PRESETS[self.preset]:
            data[name] = self.flag(name)
        if data["critic_lr"] is None:
            data["critic_lr"] = CRITIC_LR_DEFAULT[self.critic]
        return TrainConfig(**data)


def _format_validation_error(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(TrainConfig.model_fields))
        return f"unknown config key {key!r}; allowed keys: {allowed}"
    if err["type"] == "literal_error":
        return f"{key}: {err['msg']} (got {err.get('input')!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if key == "config":
        return f"config: {msg}"
    desc = TrainConfig.model_fields[key].description if key in TrainConfig.model_fields else ""
    return f"{key}={err.get('input')!r}: {msg} ({key}: {desc})"


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. --set lr=1e-6)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML (or nothing), apply `key=value` overrides, validate. Raises ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must be a mapping of key: value, got {type(loaded).__name__}")
        data = loaded
    for item in overrides or []:
        keys, value = _parse_override(item)
        target = data
        for k in keys[:-1]:
            target = target.setdefault(k, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        target[keys[-1]] = value
    # YAML turns an unquoted 1e-6 into a string; accept it where a number is expected.
    for key, value in list(data.items()):
        field = TrainConfig.model_fields.get(key)
        if isinstance(value, str) and field is not None and field.annotation in (float, float | None):
            try:
                data[key] = float(value)
            except ValueError:
                pass
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


def describe_config(cfg: TrainConfig | None = None) -> str:
    """Every field with its value (or default), and its description: `--print-config`."""
    cfg = cfg or TrainConfig()
    default = TrainConfig(preset=cfg.preset)
    lines = [f"# preset {cfg.preset}: {PRESETS[cfg.preset]}"]
    for name, value, doc in describe_fields(cfg, value_of=cfg.flag):
        if name in PRESETS[cfg.preset] and name not in cfg.model_fields_set:
            note = f"  [{_FROM_PRESET}]"
        elif value != as_text(default.flag(name)):
            note = f"  [default: {as_text(default.flag(name))}]"
        else:
            note = ""
        lines.append(f"{name}: {value}  # {doc}{note}")
    return "\n".join(lines)
