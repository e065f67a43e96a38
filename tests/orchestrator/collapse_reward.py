"""A reward model with an exploit window, for the supervised tiny PPO-max test.

`exploitable(prompts, responses)`: a mild, honest signal (share of the letter 'e'); during
reward calls EXPLOIT_FROM..EXPLOIT_UNTIL-1 (1-based) it instead pays a lot for long responses
that repeat one word: the degenerate pattern of a collapsing policy. Calls are counted per
process, so an in-process rollback lands after the window (the exploit is "patched").
Configure with RLGUARD_TEST_EXPLOIT="FROM:UNTIL".
"""

from __future__ import annotations

import os

_calls = [0]


def _window() -> tuple[int, int]:
    raw = os.environ.get("RLGUARD_TEST_EXPLOIT", "8:1000000")
    a, b = raw.split(":")
    return int(a), int(b)


def exploitable(prompts, responses):
    _calls[0] += 1
    lo, hi = _window()
    if lo <= _calls[0] < hi:
        out = []
        for r in responses:
            words = r.split()
            repeats = len(words) - len(set(words))
            out.append(5.0 * len(words) + 10.0 * repeats)
        return out
    return [r.count("e") / max(len(r), 1) for r in responses]


def nan_on_first_attempt(prompts, responses):
    """Honest 'e'-share reward, but NaN for every response on reward call RLGUARD_TEST_NAN_CALL
    of attempt 0 (a relaunched worker is attempt >= 1): one poisoned batch."""
    _calls[0] += 1
    if os.environ.get("RLGUARD_ATTEMPT", "0") == "0" and _calls[0] == int(os.environ.get("RLGUARD_TEST_NAN_CALL", "15")):
        return [float("nan")] * len(responses)
    return [r.count("e") / max(len(r), 1) for r in responses]
