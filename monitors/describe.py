"""Describe any settings model field by field: the one describer behind every `--print-config`.

Pure (no I/O): it returns rows; each CLI prints them in its own layout (`rlguard monitors`,
`rlguard run --print-config`, `rlguard train --print-config`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel


def as_text(value: Any) -> str:
    """A value the way it would be written in the YAML config (flow style, one line)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_none=True) for v in value]
    elif hasattr(value, "value") and isinstance(value.value, (str, int, float)):
        value = value.value  # an enum member: its config spelling
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def describe_fields(model: BaseModel, prefix: str = "", *,
                    value_of: Callable[[str], Any] | None = None) -> list[tuple[str, str, str]]:
    """(dotted name, value as YAML text, meaning) for every leaf field, in declaration order; a
    nested section gives a row with an empty value, then its own fields. `value_of(name)`
    overrides how a top-level value is read (a preset that fills unset fields, say)."""
    rows = []
    for name, info in type(model).model_fields.items():
        value = value_of(name) if value_of is not None and not prefix else getattr(model, name)
        key = f"{prefix}{name}"
        doc = " ".join((info.description or "").split())
        if isinstance(value, BaseModel):
            rows.append((key, "", doc or (type(value).__doc__ or "").strip().split("\n")[0]))
            rows.extend(describe_fields(value, key + "."))
        else:
            rows.append((key, as_text(value), doc))
    return rows
