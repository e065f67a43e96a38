"""The three networks of PPO-RLHF: policy, frozen reference, critic (value head on a backbone).

- policy: AutoModelForCausalLM from `cfg.model` (optionally wrapped with LoRA adapters).
- reference: the same weights, frozen. With LoRA there is no second copy: the reference is
  the policy with its adapters disabled (`reference_logits` handles both).
- critic (`critic: separate`, PPO-max): `ValueModel` = a transformer backbone + a linear value
  head. PPO-max starts it from the reward model (backbone and score head) when the reward is an
  HF sequence-classification model with the policy's tokenizer, else from the policy's backbone
  with a zero head (values start at 0).
- critic (`critic: shared_backbone`): `ValueHead` = only the linear head, applied to the
  policy's final hidden states captured during the rollout's scoring pass (detached: the value
  loss never moves the policy, and the guardrails' lr knob stays the policy's alone). No
  second backbone to run, train or checkpoint.

All models run in eval mode (dropout off) during rollout *and* training: with dropout on, the
old and new log-probabilities of the same tokens differ by noise and the PPO ratio is biased.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; under torchrun a bare 'auto'/'cuda' is this rank's
    GPU (cuda:LOCAL_RANK), so that N ranks on one node do not all share GPU 0."""
    from rlguard.ppo.distributed import rank_device

    spec = rank_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def resolve_model_path(spec: str) -> str:
    """'bundled' -> the shipped SmolLM2-135M directory (imported lazily: it may unpack files)."""
    if spec == "bundled":
        from rlguard.ppo.bundled import bundled_model_dir

        return str(bundled_model_dir())
    return spec


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: the first real token is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ValueModel(nn.Module):
    """Backbone (a base transformer returning hidden states) + Linear(hidden, 1)."""

    def __init__(self, backbone: nn.Module, hidden_size: int, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1, bias=True)
        with torch.no_grad():
            if head is not None:
                self.value_head.weight.copy_(head.weight.to(self.value_head.weight.dtype))
                if head.bias is not None:
                    self.value_head.bias.copy_(head.bias.to(self.value_head.bias.dtype))
                else:
                    self.value_head.bias.zero_()
            else:
                self.value_head.weight.zero_()
                self.value_head.bias.zero_()

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        hidden = out.last_hidden_state
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()


class ValueHead(nn.Module):
    """Linear(hidden, 1) on features the policy already computed; starts at 0 like ValueModel's.
    Kept in float32 whatever the policy dtype (it is tiny; bf16 values would quantise returns)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.value_head = nn.Linear(hidden_size, 1, bias=True)
        with torch.no_grad():
            self.value_head.weight.zero_()
            self.value_head.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_head(features.to(self.value_head.weight.dtype)).squeeze(-1).float()


def _same_vocab(a, b) -> bool:
    try:
        return a.get_vocab() == b.get_vocab()
    except Exception:  # noqa: BLE001 - exotic tokenizers: assume different, use the policy
        return False


def _classification_head(model) -> nn.Linear | None:
    for name in ("score", "classifier", "v_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear) and head.out_features == 1:
            return head
    return None


def build_critic(policy_path: str, reward_hf_path: str | None, policy_tokenizer, dtype, device) -> tuple[ValueModel, str]:
    """Return (critic, where it came from) as in the module docstring."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if reward_hf_path is not None:
        rm_tokenizer = AutoTokenizer.from_pretrained(reward_hf_path)
        if _same_vocab(rm_tokenizer, policy_tokenizer):
            rm = AutoModelForSequenceClassification.from_pretrained(reward_hf_path, dtype=dtype)
            backbone = getattr(rm, rm.base_model_prefix)
            critic = ValueModel(backbone, rm.config.hidden_size, _classification_head(rm))
            return critic.to(device), f"reward model {reward_hf_path}"
        log.warning("reward model %s has a different tokenizer than the policy: critic starts from the policy",
                    reward_hf_path)
    # The causal-LM checkpoint has an lm_head the backbone does not use: silence that report.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(policy_path, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    return ValueModel(backbone, backbone.config.hidden_size).to(device), f"policy {policy_path}"


def apply_lora(model: nn.Module, cfg, task_type: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type=task_type)
    return get_peft_model(model, lora)


def build_models(cfg, reward_hf_path: str | None):
    """(tokenizer, policy, reference or None, critic, device): ready to train, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    path = resolve_model_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    reference = None
    if cfg.use_lora:
        policy = apply_lora(policy, cfg, "CAUSAL_LM")
    else:
        reference = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        reference.eval().requires_grad_(False)
    if cfg.critic == "shared_backbone":
        critic, origin = ValueHead(policy.config.hidden_size).to(device), "a zero value head on the policy's backbone"
    else:
        critic, origin = build_critic(path, reward_hf_path, tokenizer, dtype, device)
        if cfg.use_lora:
            critic.backbone = apply_lora(critic.backbone, cfg, "FEATURE_EXTRACTION")
    policy.eval()
    critic.eval()
    log.info("critic initialised from %s", origin)
    return tokenizer, policy, reference, critic, device


def reference_context(policy, reference):
    """Context in which `ref_model(...)` gives reference outputs; returns (context, ref_model)."""
    if reference is not None:
        return contextlib.nullcontext(), reference
    return policy.disable_adapter(), policy


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must hold: every trainable parameter (all of them in full
    fine-tuning, adapters + value head with LoRA). Tied weights appear once."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match this model (missing {missing[:3]}, unexpected"
                         f" {unexpected[:3]}): resume with the same model and use_lora setting")
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if t.shape != p.shape:
                raise ValueError(f"{where}: {name} has shape {tuple(t.shape)}, model has {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
