"""Grafana panel JSON builders (timeseries, stat, row, annotation) and the grid layout:
the vocabulary dashboards/grafana/generate.py writes the rlguard dashboard in."""

from __future__ import annotations

DS = {"type": "prometheus", "uid": "${datasource}"}
RUN = 'run_id=~"$run_id"'


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping at the edge."""

    def __init__(self):
        self.x = self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, panel: dict, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title: str) -> dict:
        if self.x:
            self.x, self.y = 0, self.y + self.row_h
        panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        self.place(panel, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0
        return panel


def _targets(queries: list[tuple[str, str]]) -> list[dict]:
    return [
        {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "none",
    description: str = "",
    stack: bool = False,
    draw: str = "line",
) -> dict:
    custom = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 10 if stack else 0,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def stat(
    title: str,
    expr: str,
    legend: str,
    *,
    unit: str = "none",
    description: str = "",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [{**_targets([(expr, legend)])[0], "instant": True, "range": False}],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
        },
    }


def annotation(name: str, expr: str, color: str, title: str, text: str) -> dict:
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "iconColor": color,
        "expr": expr,
        "step": "1m",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "run_id",
        "useValueForTime": False,
    }
