"""Fuzz the metric-event parser and reader: any input gives events or BadEvent (line number +
reason), never another exception, and the good lines of a file always come through."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rlguard.monitors.events import BadEvent, MetricEvent, event_from_dict, parse_event_line
from rlguard.orchestrator.event_reader import EventReader
from tests.reliability.chaos_lib import SUMMARY_PATH, record
from tests.reliability.fuzz_strategies import JSONISH

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TALLY = {"tried": 0, "refused": 0}

HOSTILE_LINES = [
    b'{"step": 1, "metrics": {"kl": 1' + b"0" * 400 + b"}}",  # an integer too large for a float
    b'{"step": 1, "time": 1' + b"0" * 400 + b', "metrics": {}}',
    b'{"step": 1' + b"0" * 400 + b', "metrics": {}}',
    b"[" * 100_000, b'{"step": 1, "metrics": ' + b"{" * 50_000,
    b'{"step": 1, "metrics": {"kl": NaN, "x": -Infinity}}', b"\xff\xfe", b"\x00" * 10, b'{"step": -1}',
    b'{"step": 1.5}', b'{"step": true}', b'{"step": 1, "metrics": {"a": "1"}}', b'{"step": 1, "attempt": -3}',
    b'{"step": 1, "metrics": []}', b'{"step": 1, "time": "now"}', b'{"step": 1, "time": Infinity}',
    b'"just a string"', b"1e999", b'{"step": 1, "metrics": {"k": 1e999}}',
    b'{"step": 1e308, "metrics": {}}', b'{"step": 9007199254740992, "metrics": {}}',
    b'{"step": 1, "metrics": {"a\\u0000b": NaN}}', b'{"step": 1, "metrics": {"kl": "' + b"A" * 100_000 + b'"}}',
]


def _tally(refused: bool) -> None:
    TALLY["tried"] += 1
    TALLY["refused"] += refused
    if TALLY["tried"] % 50 == 0 or TALLY["tried"] < 2:
        _record()


def _record() -> None:
    record("fuzz_events", kind="input", name="fuzzed metric-event lines and objects (parser + reader)",
               tried=TALLY["tried"], refused=TALLY["refused"], accepted=TALLY["tried"] - TALLY["refused"], crashes=0,
               test="test_fuzz_events.py::test_parse_event_line_raises_only_bad_event, "
                    "::test_event_from_dict_raises_only_bad_event")


# Non-finite metric values are values (docs/METRICS.md: a NaN loss is what the monitors are
# for): these hostile-looking lines are valid events, accepted on purpose. Every other line of
# HOSTILE_LINES must be refused with a BadEvent.
ACCEPTED_BY_DESIGN = {b'{"step": 1, "metrics": {"kl": NaN, "x": -Infinity}}', b'{"step": 1, "metrics": {"k": 1e999}}'}


def test_hostile_lines_are_refused_with_bad_event_only():
    refused, accepted, crashes = [], [], []
    for i, line in enumerate(HOSTILE_LINES, 1):
        try:
            ev = parse_event_line(line, i)
            assert isinstance(ev, MetricEvent)
            accepted.append(line)
        except BadEvent as e:
            assert e.lineno == i and e.reason and len(e.reason) < 300
            refused.append(line)
        except Exception as e:  # noqa: BLE001 - what we are looking for
            crashes.append(f"line {i} {line[:60]!r}...: {type(e).__name__}: {e}")
    record("events_hostile", kind="input", name="hand-written hostile event lines (huge ints, 401-digit step, deep "
           "nesting, NUL, non-UTF-8; NaN/Infinity values accepted by design)", tried=len(HOSTILE_LINES),
           refused=len(refused), accepted=len(accepted), crashes=len(crashes))
    assert not crashes, "\n".join(crashes)
    assert set(accepted) == ACCEPTED_BY_DESIGN, [x[:60] for x in accepted]
    assert len(refused) == len(HOSTILE_LINES) - len(ACCEPTED_BY_DESIGN)


@FUZZ
@given(line=st.one_of(st.binary(max_size=200), st.text(max_size=200),
                      JSONISH.map(lambda o: json.dumps(o, allow_nan=True))))
@example(line=b'{"step": 3, "metrics": {"kl": 1' + b"0" * 330 + b"}}")
def test_parse_event_line_raises_only_bad_event(line):
    try:
        parse_event_line(line, 7)
        _tally(False)
    except BadEvent as e:
        assert e.lineno == 7 and e.reason
        _tally(True)


@FUZZ
@given(obj=st.one_of(JSONISH, st.fixed_dictionaries(
    {"step": st.one_of(st.integers(min_value=-5, max_value=10**400), st.floats(), st.text(max_size=3))},
    optional={"metrics": st.dictionaries(st.text(max_size=5), JSONISH, max_size=4),
              "time": st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400)),
              "attempt": JSONISH})))
def test_event_from_dict_raises_only_bad_event(obj):
    try:
        event_from_dict(obj)
        _tally(False)
    except BadEvent:
        _tally(True)


GOOD = st.builds(lambda s, m: {"step": s, "metrics": m}, st.integers(min_value=0, max_value=10**6),
                 st.dictionaries(st.sampled_from(["kl", "reward", "perplexity", "x"]),
                                 st.one_of(st.none(), st.floats(allow_nan=True)), max_size=4))
BAD = st.one_of(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b.strip()),
                st.sampled_from([x for x in HOSTILE_LINES if len(x) < 1000]))


@FUZZ
@given(lines=st.lists(st.one_of(GOOD.map(lambda d: ("good", d)), BAD.map(lambda b: ("bad", b))), max_size=30),
       torn=st.booleans())
def test_the_reader_keeps_every_good_line_and_counts_the_bad(tmp_path_factory, lines, torn):
    path = tmp_path_factory.mktemp("r") / "metrics.jsonl"
    blob = b"".join((json.dumps(x, allow_nan=True).encode() if k == "good" else x) + b"\n" for k, x in lines)
    if torn:
        blob += b'{"step": 99, "metr'  # a writer killed mid-line
    path.write_bytes(blob)
    reader = EventReader(path)
    events = list(reader)
    good = []
    for k, x in lines:
        if k == "good":
            good.append(x)
        else:
            try:  # a "bad" random line that happens to be a valid event is fine
                ev = parse_event_line(x)
                good.append({"step": ev.step, "metrics": ev.metrics})
            except BadEvent:
                pass
            except Exception:  # noqa: BLE001 - counted by the test above; here only the reader matters
                pass
    assert [e.step for e in events] == [g["step"] for g in good]
    assert reader.bad_lines == len(lines) - len(good) + int(torn)


def test_zz_record_the_tally():
    """The last test of the module: the figures file holds this module's final tally."""
    _record()
    doc = json.loads(SUMMARY_PATH.read_text())
    assert doc["entries"]["fuzz_events"]["tried"] == TALLY["tried"]
