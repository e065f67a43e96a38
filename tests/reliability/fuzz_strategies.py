"""Hypothesis strategies for the fuzz tests: config-shaped mappings that mix real field names
with hostile values, JSON-ish values of every type, deep and wide JSON bodies, and the HTTP
header values an attacker controls (Host, Last-Event-ID)."""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "nan", "1e-6", "-1", "0", "yes", "~", "../../etc", "\x00", "null", "1e999", "auto"]),
    st.just(math.nan), st.just(-math.inf),
)

JSONISH = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                       max_leaves=12)


def config_mapping(field_names: list[str], nested: dict[str, list[str]] | None = None):
    """Mappings whose keys are mostly real field names (so validation goes deep) and whose values are hostile."""
    nested = nested or {}
    keys = st.one_of(st.sampled_from(field_names or ["x"]), st.text(max_size=10))

    def value_for(key_strategy):
        return key_strategy.flatmap(lambda k: st.tuples(
            st.just(k), st.one_of(JSONISH, config_mapping(nested[k])) if k in nested else JSONISH))

    return st.lists(value_for(keys), max_size=6).map(dict)


def _nested(opener: bytes, closer: bytes, depth: int, closed: bool) -> bytes:
    return opener * depth + (b"0" + closer * depth if closed else b"")


#: JSON nested from 1 to 200,000 deep, closed (valid JSON) or not: the API's limit is 64 levels
#: and the parser's recursion limit near 1,000, so both sides of each are covered.
DEEP_JSON = st.builds(_nested, st.sampled_from([b"[", b'{"a":', b'{"events":[']),
                      st.sampled_from([b"]", b"}", b"]}"]), st.one_of(st.integers(1, 5_000),
                                                                    st.sampled_from([65, 999, 1_000, 200_000])),
                      st.booleans())
#: Wide JSON: long arrays and objects with many keys (up to ~1.5 MB, under the 16 MiB limit).
WIDE_JSON = st.one_of(
    st.integers(0, 200_000).map(lambda n: json.dumps(list(range(n))).encode()),
    st.integers(0, 50_000).map(lambda n: json.dumps({f"k{i}": i for i in range(n)}).encode()),
    st.integers(0, 50_000).map(lambda n: json.dumps({"reason": "x" * n, "acks": [{}] * (n // 10)}).encode()),
)
#: Host values: the loopback spellings the API serves and the foreign ones it refuses.
HOST_VALUES = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "127.0.0.1:1", "localhost:65535", "[::1]:8", "LOCALHOST",
                     "attacker.example", "127.0.0.1.attacker.example", "127.0.0.2", "0.0.0.0", "", "[::1",
                     "localhost:", "127.0.0.1:x", "::1", "localhost.", "127.1"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)
#: Last-Event-ID values: what a browser sends back (a sequence number) and what an attacker does.
LAST_EVENT_IDS = st.one_of(
    st.integers(0, 2**62).map(str), st.integers(1, 6_000).map(lambda n: "9" * n),
    st.sampled_from(["-1", "1e3", "0x10", "\u00b2", "\u0661", "1.5", "nan", "", " ", "1 2"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
