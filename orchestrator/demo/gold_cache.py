"""The starting model's gold result, cached beside the converted model.

Every demo run scores the same starting model on the same 48 held-out prompts with the same
sampling seed: ~27 s on the 2-core machine for a result that cannot change. It is computed once
and kept under `<model cache>/gold/<key>.json`. The key holds everything the result depends on:
the model's files (name, size, mtime), the prompts, the generation settings, the seed, the torch
and transformers versions and the source of the code that generates and scores (gold.py,
ppo/rollout.py); change any of them and the result is computed again. A cache file that cannot
be read is ignored and rewritten, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

GENERATION_FIELDS = ("max_prompt_tokens", "max_new_tokens", "temperature", "top_p", "chat_template",
                     "dtype", "use_lora")


def _model_files(model_dir: Path) -> list:
    out = []
    for f in sorted(model_dir.iterdir()) if model_dir.is_dir() else []:
        if f.is_file():
            st = f.stat()
            out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def _source_hash(code: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in code:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def start_key(model_dir: str | Path, cfg, prompts: list[str], batch_size: int, seed: int,
              code: Sequence[Path] = ()) -> str:
    """The cache key of the starting model's gold result under these settings; `code`: the source
    files that generate and score it (their bytes are part of the key)."""
    import torch
    import transformers

    payload = {
        "model_files": _model_files(Path(model_dir)),
        "prompts": prompts,
        "generation": {k: getattr(cfg, k, None) for k in GENERATION_FIELDS},
        "batch_size": batch_size,
        "seed": seed,
        "versions": [torch.__version__, transformers.__version__],
        "source": _source_hash(code),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load(cache_dir: Path, key: str) -> dict | None:
    path = Path(cache_dir) / f"{key}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("metrics"), dict) and isinstance(data.get("samples"), list)
    return data if ok else None


def store(cache_dir: Path, key: str, result: dict) -> None:
    """Write atomically (a reader never sees half a file); a cache that cannot be written is skipped."""
    cache_dir = Path(cache_dir)
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(result))
        os.replace(tmp, cache_dir / f"{key}.json")
    except OSError:
        tmp.unlink(missing_ok=True)
