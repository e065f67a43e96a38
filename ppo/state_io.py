"""Training state to files without pickle: tensors -> safetensors, structure -> JSON.

An optimizer state dict `{"state": {idx: {"exp_avg": T, "step": T, ...}}, "param_groups": [...]}`
is split into `NAME.safetensors` (keys "idx/key") and `NAME.json` (param groups, scalars
and the list of tensor keys). RNG states (python, numpy, torch cpu, cuda) likewise.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlguard.ppo.checkpoint_files import CheckpointError


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=True))


def read_json(path: Path):
    """The JSON in `path`; CheckpointError naming the file when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON ({e})") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in `path`; CheckpointError naming the file when it is missing or not safetensors."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(path, f"not a readable safetensors file ({e})") from None


def optimizer_payload(opt: torch.optim.Optimizer, copy=None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors keyed "idx/key", JSON structure) of an optimizer's state. With `copy(key, t)`
    the tensors are private CPU copies (a snapshot that later optimizer steps cannot change)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}/{key}"] = copy(f"{idx}/{key}", value) if copy is not None else value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    # JSON round trip: a deep copy of the param groups (lr etc. change at the next step).
    structure = json.loads(json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}, allow_nan=True))
    return tensors, structure


def write_optimizer_payload(directory: Path, name: str, tensors: dict[str, torch.Tensor], structure: dict) -> None:
    save_tensors(directory / f"{name}.safetensors", tensors)
    write_json(directory / f"{name}.json", structure)


def load_optimizer(opt: torch.optim.Optimizer, directory: Path, name: str) -> None:
    structure = read_json(directory / f"{name}.json")
    tensors = load_tensors(directory / f"{name}.safetensors")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, _, field = key.partition("/")
        state.setdefault(int(idx), {})[field] = value
    for idx, entry in structure["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = structure["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def capture_rng() -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of every global RNG state."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    js = {"python": [py_version, list(py_state), py_gauss],
          "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    return js, tensors


def restore_rng(js: dict, tensors: dict[str, torch.Tensor]) -> None:
    v, state, gauss = js["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
