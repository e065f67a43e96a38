"""state_dict / load_state_dict: a restored stack continues exactly like the uninterrupted one."""

from __future__ import annotations

import json
import math

import pytest

from rlguard.monitors.config import MonitorConfig, TrackConfig
from rlguard.monitors.stack import MonitorStack
from rlguard.monitors.track import MetricTrack
from tests.monitors.monitor_streams import collapse, events, feed, healthy_stream


def _json_round_trip(d: dict) -> dict:
    # The supervisor persists monitor state as JSON (NaN spelled the Python way).
    return json.loads(json.dumps(d, allow_nan=True))


@pytest.mark.parametrize("cut", [15, 120, 205, 215])
def test_stack_round_trip_mid_stream_gives_identical_alerts(cut):
    rows = collapse(healthy_stream(260, seed=21, extra=("entropy", "truncated_fraction")), onset=200)
    rows[230]["reward"] = math.nan
    rows[100]["eval_reward_skew"] = 0.1
    evs = events(rows)
    whole = [a.to_dict() for a in feed(MonitorStack(), evs)]
    first = MonitorStack()
    part1 = feed(first, evs[:cut])
    second = MonitorStack()
    second.load_state_dict(_json_round_trip(first.state_dict()))
    part2 = feed(second, evs[cut:])
    assert [a.to_dict() for a in part1 + part2] == whole
    assert second.state_dict().keys() == first.state_dict().keys()


def test_track_round_trip_preserves_every_statistic():
    t = MetricTrack("kl", TrackConfig())
    for i, row in enumerate(healthy_stream(70)):
        t.push(i + 1, row["kl"])
    u = MetricTrack("kl", TrackConfig())
    u.load_state_dict(_json_round_trip(t.state_dict()))
    assert u.state_dict() == t.state_dict()


def test_load_rejects_an_unknown_state_version():
    stack = MonitorStack(MonitorConfig())
    with pytest.raises(ValueError, match="version"):
        stack.load_state_dict({"version": 99})
