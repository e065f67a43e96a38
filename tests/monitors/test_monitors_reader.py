"""EventReader: files, tailing with torn lines, iterables, in-process pushes, bad input."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlguard.monitors.events import MetricEvent
from rlguard.orchestrator.event_reader import EventReader


def _line(step, **metrics) -> str:
    return json.dumps({"step": step, "metrics": metrics}, allow_nan=True) + "\n"


def test_file_with_bad_lines_is_read_to_the_end(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(
        _line(1, reward=1.0)
        + "not json\n"
        + '{"metrics": {"kl": 0.1}}\n'
        + "\n"
        + '{"step": 3, "metrics": {"kl": "high"}}\n'
        + '{"step": 4, "metrics": {"kl": NaN, "reward": Infinity, "ppl": null}}\n'
        + _line(5, reward=2.0)
    )
    seen = []
    r = EventReader(p, on_error=seen.append)
    evs = list(r)
    assert [e.step for e in evs] == [1, 4, 5]
    assert math.isnan(evs[1].metrics["kl"]) and evs[1].metrics["reward"] == math.inf
    assert evs[1].metrics["ppl"] is None
    assert r.bad_lines == 3
    assert [(e.lineno, e.reason.split(" (")[0]) for e in r.errors] == [
        (2, "not JSON"), (3, "missing 'step'"), (5, "metric 'kl' is str 'high', expected a number or null")]
    assert seen == r.errors


def test_tailing_a_growing_file_waits_for_the_end_of_a_torn_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(1, reward=1.0) + '{"step": 2, "metr')
    r = EventReader(p, follow=True)
    assert [e.step for e in r.read_available()] == [1]
    assert r.read_available() == [] and r.bad_lines == 0  # the torn half is not parsed
    with p.open("a") as f:
        f.write('ics": {"reward": 2.0}}\n' + _line(3, reward=3.0))
    assert [e.step for e in r.read_available()] == [2, 3]
    assert r.bad_lines == 0
    r.close()


def test_follow_iteration_stops_after_idle_timeout_with_injected_clock(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(1, reward=1.0) + _line(2, reward=1.0))
    now = [0.0]
    r = EventReader(p, follow=True, idle_timeout_s=5.0, clock=lambda: now[0],
                    sleep=lambda s: now.__setitem__(0, now[0] + s), poll_interval_s=1.0)
    assert [e.step for e in r] == [1, 2]


def test_a_truncated_file_is_read_again_from_the_start(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(1, reward=1.0) + _line(2, reward=1.0))
    r = EventReader(p, follow=True)
    assert len(r.read_available()) == 2
    p.write_text(_line(1, reward=5.0))
    assert [e.metrics["reward"] for e in r.read_available()] == [5.0]
    assert r.segments == 2  # step went back
    r.close()


def test_iterable_and_in_process_sources_count_segments():
    r = EventReader([_line(1, kl=0.1), _line(2, kl=0.1).encode(), _line(1, kl=0.2), "garbage"])
    assert [e.step for e in r] == [1, 2, 1]
    assert r.segments == 2 and r.bad_lines == 1 and r.errors[0].lineno == 4
    q = EventReader()
    assert q.feed('{"step": 1, "metrics"') == []
    assert [e.step for e in q.feed(': {"kl": 1}}\n{"step": 2, "metrics": {}}\n')] == [1, 2]
    assert q.feed('{"step": 3, "metrics": {}}') == [] and [e.step for e in q.flush()] == [3]
    assert isinstance(q.push({"step": 4, "metrics": {"kl": 0.5}}), MetricEvent)
    assert q.push({"metrics": {}}) is None and q.bad_lines == 1


def test_a_final_line_without_newline_is_parsed_when_not_following(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(_line(1, reward=1.0) + '{"step": 2, "metrics": {"reward": 2}}')
    assert [e.step for e in EventReader(p)] == [1, 2]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.builds(lambda s, m, t: json.dumps({"step": s, "metrics": m, "time": t}, allow_nan=True).encode(),
              json_values, json_values, json_values),
    st.builds(lambda s, m: json.dumps({"step": s, "metrics": m}, allow_nan=True).encode(),
              st.integers(-3, 10**6), st.dictionaries(st.text(max_size=8), st.floats(allow_nan=True) | st.none(),
                                                       max_size=4)),
), max_size=12), st.integers(1, 17))
def test_fuzzed_input_never_crashes_the_reader_or_the_stack(lines, split):
    from rlguard.monitors.stack import MonitorStack

    blob = b"\n".join(lines) + b"\n"
    r = EventReader()
    stack = MonitorStack()
    evs = []
    for i in range(0, len(blob), split):
        evs.extend(r.feed(blob[i:i + split]))
    evs.extend(r.flush())
    for ev in evs:
        stack.update(ev)
        stack.check_stall(1e9)
    assert r.events_read == len(evs)
    assert r.events_read + r.bad_lines <= blob.count(b"\n") + 1
