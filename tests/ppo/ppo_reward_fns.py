"""Reward callables for the trainer tests (referenced as `tests.ppo.ppo_reward_fns:NAME`)."""


def letter_e_fraction(prompts, responses):
    """Share of the response's characters that are the letter 'e': a dense, learnable signal."""
    return [r.count("e") / max(len(r), 1) for r in responses]


def wrong_length(prompts, responses):
    return [0.0] * (len(responses) + 1)


def wrong_type(prompts, responses):
    return ["high"] * len(responses)


def not_a_list(prompts, responses):
    return 1.0


NAN_CALLS: list[int] = []  # 1-based call numbers on which nan_on_listed_calls returns NaN
_calls = [0]


def nan_on_listed_calls(prompts, responses):
    """letter_e_fraction, except NaN for every response on the calls listed in NAN_CALLS."""
    _calls[0] += 1
    if _calls[0] in NAN_CALLS:
        return [float("nan")] * len(responses)
    return letter_e_fraction(prompts, responses)


def one_plus_e_fraction(prompts, responses):
    """letter_e_fraction shifted by 1: a mean far from the 0 a fresh value head predicts."""
    return [1.0 + x for x in letter_e_fraction(prompts, responses)]
