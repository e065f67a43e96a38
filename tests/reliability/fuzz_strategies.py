"""Hypothesis strategies for the fuzz tests: config-shaped mappings that mix real field names
with hostile values, and JSON-ish values of every type."""

from __future__ import annotations

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
