"""A schema check for the dashboard JSON dashboards/grafana/generate.py writes (Grafana
publishes no standalone JSON schema for schemaVersion 41), and the list of its PromQL queries
that the tests run through promtool and a real Prometheus."""

from __future__ import annotations

import re

from rlguard.dashboards.grafana.panels import DS, RUN
from rlguard.dashboards.prom_catalog import all_family_names

SCHEMA_VERSION = 41  # Grafana 11.x


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation."""
    found = [
        (f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']!r}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a
    ]
    return found


def concrete(expr: str, run_id: str = ".*") -> str:
    """`expr` with Grafana's variables replaced so Prometheus can run it."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("$run_id", run_id)
    )


_FAMILY = re.compile(r"\b(rlguard_[a-zA-Z0-9_]+)")
_VARIABLE = re.compile(r"\$(\w+)")


def validate_dashboard(d: dict) -> list[str]:
    """Problems in the structure this module generates (empty list: valid)."""
    errors: list[str] = []
    for key, kind in (
        ("uid", str),
        ("title", str),
        ("schemaVersion", int),
        ("panels", list),
        ("templating", dict),
        ("annotations", dict),
        ("time", dict),
    ):
        if not isinstance(d.get(key), kind):
            errors.append(f"top level: {key!r} must be a {kind.__name__}")
    if errors:
        return errors
    if d["schemaVersion"] != SCHEMA_VERSION:
        errors.append(f"schemaVersion is {d['schemaVersion']}, expected {SCHEMA_VERSION}")
    variables = {v.get("name") for v in d["templating"].get("list", [])}
    for needed in ("datasource", "run_id"):
        if needed not in variables:
            errors.append(f"templating: variable {needed!r} missing")
    known = set(all_family_names()) | {"rlguard_step_duration_seconds_bucket"}
    builtin_vars = {"__rate_interval", "__interval", "__range"}
    ids, cells = set(), set()
    for p in d["panels"]:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if (
            not all(isinstance(g.get(k), int) for k in "hwxy")
            or g["x"] + g["w"] > 24
            or g["w"] < 1
            or g["h"] < 1
        ):
            errors.append(f"{where}: gridPos {g} is not on the 24-column grid")
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    errors.append(f"{where}: overlaps another panel at ({x}, {y})")
                    break
                cells.add((x, y))
        if p.get("type") == "row":
            continue
        if p.get("type") not in ("timeseries", "stat"):
            errors.append(f"{where}: unexpected type {p.get('type')!r}")
        if p.get("datasource") != DS:
            errors.append(f"{where}: datasource must be the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            errors.append(f"{where}: duplicate refId")
    for where, expr in queries(d):
        if f"{{{RUN}" not in expr and "rlguard_" in expr:
            errors.append(f"{where}: query does not filter by the run_id variable: {expr}")
        for family in _FAMILY.findall(expr):
            if family not in known:
                errors.append(f"{where}: {family} is not a metric the exporter serves")
        for var in _VARIABLE.findall(expr):
            if var not in variables and var not in builtin_vars:
                errors.append(f"{where}: undefined variable ${var}")
    return errors
