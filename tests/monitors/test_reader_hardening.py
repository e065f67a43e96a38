"""Hostile metric streams: a line with no end, steps no float holds, megabyte values."""

from __future__ import annotations

import json

import pytest

from rlguard.monitors.events import BadEvent, parse_event_line
from rlguard.orchestrator.event_reader import MAX_LINE_BYTES, EventReader


def test_a_line_over_the_cap_is_one_bad_line_reported_before_its_newline_then_skipped():
    reader = EventReader()
    assert reader.feed(b'{"step": 1, "metrics": {}}\n') != []
    junk = b"x" * (1 << 16)
    for _ in range((MAX_LINE_BYTES >> 16) + 8):  # 1.5 MiB in 64 KiB pieces, no newline
        assert reader.feed(junk) == []
    assert reader.bad_lines == 1 and "longer than 1048576 bytes" in reader.errors[0].reason
    assert reader.errors[0].lineno == 2
    for _ in range(40):  # still inside the same line: not counted again
        reader.feed(junk)
    events = reader.feed(b"tail of the long line\n" + b'{"step": 3, "metrics": {"kl": 0.1}}\n')
    assert [e.step for e in events] == [3] and reader.bad_lines == 1 and reader.lineno == 3
    assert reader.flush() == []


def test_a_long_line_with_its_newline_in_one_chunk_and_an_oversized_file_line(tmp_path):
    reader = EventReader()
    events = reader.feed(b"y" * (MAX_LINE_BYTES + 1) + b'\n{"step": 2, "metrics": {}}\n')
    assert [e.step for e in events] == [2] and reader.bad_lines == 1
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1, "metrics": {}}\n' + b"z" * (3 * MAX_LINE_BYTES) + b"\n"
                     + b'{"step": 2, "metrics": {}}\n' + b"w" * (2 * MAX_LINE_BYTES))  # the last one unterminated
    reader = EventReader(path)
    assert [e.step for e in reader] == [1, 2]
    assert [e.lineno for e in reader.errors] == [2, 4]


@pytest.mark.parametrize("step", [2**53, 10**400, 1e308, 2.0**53, 10**16], ids=["2**53", "401-digits", "1e308", "2.0**53", "1e16"])
def test_steps_a_float_cannot_hold_exactly_are_refused(step):
    text = repr(step) if isinstance(step, float) else str(step)
    line = f'{{"step": {text}, "metrics": {{"kl": 0.1}}}}'
    with pytest.raises(BadEvent, match=r"'step' must be below 2\*\*53") as e:
        parse_event_line(line, 4)
    assert len(e.value.reason) < 200
    assert parse_event_line(f'{{"step": {2**53 - 1}, "metrics": {{}}}}').step == 2**53 - 1


def test_reasons_quote_hostile_values_truncated():
    big = json.dumps({"step": 1, "metrics": {"kl": "A" * 5_000_000}})
    with pytest.raises(BadEvent) as e:
        parse_event_line(big, 1)
    assert "metric 'kl' is str 'AAAA" in e.value.reason and len(e.value.reason) < 300
    name = json.dumps({"step": 1, "metrics": {"n" * 1_000_000: "x"}})
    with pytest.raises(BadEvent) as e:
        parse_event_line(name, 1)
    assert len(e.value.reason) < 300


def test_a_metric_name_with_a_control_character_is_refused():
    for name in ["a\u0000b", "kl\n", "\u001b[31mred"]:
        with pytest.raises(BadEvent, match="control character"):
            parse_event_line(json.dumps({"step": 1, "metrics": {name: float("nan")}}), 1)
    assert parse_event_line(json.dumps({"step": 1, "metrics": {"ppo/kl é": 0.1}})).metrics == {"ppo/kl é": 0.1}
