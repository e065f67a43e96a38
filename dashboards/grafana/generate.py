"""Generate the provisionable Grafana dashboard for rlguard runs from the exporter's catalog.

    python -m dashboards.grafana.generate          # rewrite dashboards/grafana/rlguard-run.json
    python -m dashboards.grafana.generate --check  # exit 1 if the committed JSON is stale

Generated rather than hand-edited so that every query names a family the exporter really
serves (dashboards/prom_catalog.py); `validate.validate_dashboard` is the schema check for what
is generated here (Grafana publishes no standalone JSON schema for schemaVersion 41); the
tests also run every query through promtool and a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlguard.dashboards.grafana.panels import DS, RUN, Layout, annotation, stat, timeseries
from rlguard.dashboards.grafana.validate import SCHEMA_VERSION, validate_dashboard
from rlguard.dashboards.prom_catalog import STEP_METRICS

DASHBOARD_UID = "rlguard-run"
OUTPUT = Path(__file__).with_name("rlguard-run.json")

# Display unit per per-step metric (Grafana unit ids); the rest are plain numbers.
UNITS = {
    "truncated_fraction": "percentunit",
    "distinct_2": "percentunit",
    "clipfrac": "percentunit",
    "eval_distinct_2": "percentunit",
    "step_seconds": "s",
    "response_length": "suffix: tok",
    "eval_response_length": "suffix: tok",
}
GROUP_TITLES = {
    "health": "Collapse signals (PPO paper: reward up while KL, length up and perplexity down = collapse)",
    "constraints": "Constraints in force (tightening and relaxing are visible here)",
    "optimizer": "Optimizer",
    "eval": "Held-out evaluation",
    "throughput": "Throughput",
}
# The KL panel also draws the budget the alert rule compares it with.
EXTRA_TARGETS = {
    "kl": [(f"rlguard_kl_budget{{{RUN}}}", "budget {{run_id}}")],
    "perplexity": [(f"rlguard_ref_perplexity{{{RUN}}}", "under reference {{run_id}}")],
}


def _overview(lay: Layout) -> list[dict]:
    red_above = lambda v: [(None, "green"), (v, "red")]  # noqa: E731
    return [
        lay.row("Run"),
        lay.place(
            stat(
                "State",
                f"rlguard_run_state{{{RUN}}} == 1",
                "{{run_id}}: {{state}}",
                description="Supervisor run state.",
            ),
            6,
            4,
        ),
        lay.place(
            stat(
                "Step",
                f"rlguard_step{{{RUN}}}",
                "{{run_id}}",
                description="Latest optimizer step (goes back after a rollback).",
            ),
            3,
            4,
        ),
        lay.place(stat("Attempt", f"rlguard_attempt{{{RUN}}}", "{{run_id}}"), 3, 4),
        lay.place(
            stat(
                "Critical alerts (range)",
                f'sum by (run_id) (increase(rlguard_alerts_total{{{RUN},severity="critical"}}[$__range]))',
                "{{run_id}}",
                thresholds=red_above(1),
            ),
            3,
            4,
        ),
        lay.place(
            stat(
                "Rollbacks (range)",
                f"increase(rlguard_rollbacks_total{{{RUN}}}[$__range])",
                "{{run_id}}",
                thresholds=[(None, "green"), (1, "orange")],
            ),
            3,
            4,
        ),
        lay.place(
            stat(
                "Last healthy checkpoint",
                f"rlguard_last_healthy_checkpoint_step{{{RUN}}}",
                "{{run_id}}",
                description="-1: none yet.",
            ),
            3,
            4,
        ),
        lay.place(
            stat(
                "Since last step",
                f"time() - rlguard_last_step_timestamp_seconds{{{RUN}}}",
                "{{run_id}}",
                unit="s",
                thresholds=[(None, "green"), (300, "orange"), (900, "red")],
            ),
            3,
            4,
        ),
        lay.place(_not_watched(), 24, 3),
    ]


def _not_watched() -> dict:
    """One tile per failure class the run's metrics do not arm: what it is NOT protected against."""
    panel = stat(
        "Not watched (a metric the detector needs is not logged)",
        f"rlguard_detection_armed{{{RUN}}} == 0",
        "{{run_id}}: {{class}}",
        description="Failure classes no detector can see in this run, because a metric they need is not "
        "logged (e.g. no kl at trl's beta 0). Which metric: rlguard status RUN, /api/status, or the "
        "coverage table of docs/METRICS.md. Empty: every class is armed.",
        thresholds=[(None, "orange")],
    )
    panel["options"]["textMode"] = "name"  # the value is always 0: the class is the message
    return panel


def _metric_panels(lay: Layout) -> list[dict]:
    panels: list[dict] = []
    for group, title in GROUP_TITLES.items():
        metrics = [m for m in STEP_METRICS if m.group == group]
        panels.append(lay.row(title))
        for m in metrics:
            queries = [(f"{m.family}{{{RUN}}}", "{{run_id}}"), *EXTRA_TARGETS.get(m.name, [])]
            panels.append(
                lay.place(
                    timeseries(m.name, queries, unit=UNITS.get(m.name, "none"), description=m.help), 8, 7
                )
            )
        if group == "throughput":
            panels.append(
                lay.place(
                    timeseries(
                        "steps per minute",
                        [(f"rate(rlguard_steps_total{{{RUN}}}[$__rate_interval]) * 60", "{{run_id}}")],
                        description="From the steps counter: robust to missed scrapes.",
                    ),
                    8,
                    7,
                )
            )
            panels.append(
                lay.place(
                    timeseries(
                        "step duration p50 / p90",
                        [
                            (
                                f"histogram_quantile({q}, sum by (run_id, le) "
                                f"(rate(rlguard_step_duration_seconds_bucket{{{RUN}}}[$__rate_interval])))",
                                f"p{int(q * 100)} {{{{run_id}}}}",
                            )
                            for q in (0.5, 0.9)
                        ],
                        unit="s",
                    ),
                    8,
                    7,
                )
            )
    return panels


def _incident_panels(lay: Layout) -> list[dict]:
    return [
        lay.row("Incidents, decisions and checkpoints"),
        lay.place(
            timeseries(
                "alerts by detector",
                [
                    (
                        f"increase(rlguard_alerts_by_detector_total{{{RUN}}}[$__rate_interval])",
                        "{{run_id}} {{detector}} ({{code}}, {{severity}})",
                    )
                ],
                draw="bars",
                stack=True,
            ),
            8,
            7,
        ),
        lay.place(
            timeseries(
                "decisions by action",
                [
                    (
                        f"increase(rlguard_decisions_total{{{RUN}}}[$__rate_interval])",
                        "{{run_id}} {{action}} ({{mode}})",
                    )
                ],
                draw="bars",
                stack=True,
            ),
            8,
            7,
        ),
        lay.place(
            timeseries(
                "checkpoints by health",
                [(f"rlguard_checkpoints{{{RUN}}}", "{{run_id}} {{health}}")],
                stack=True,
            ),
            8,
            7,
        ),
        lay.place(
            timeseries(
                "restarts and notification failures",
                [
                    (f"increase(rlguard_restarts_total{{{RUN}}}[$__rate_interval])", "{{run_id}} restarts"),
                    (
                        f"increase(rlguard_notification_failures_total{{{RUN}}}[$__rate_interval])",
                        "{{run_id}} notify failed: {{target}}",
                    ),
                ],
                draw="bars",
            ),
            8,
            7,
        ),
        lay.place(
            timeseries(
                "non-finite values",
                [
                    (
                        f"increase(rlguard_nonfinite_values_total{{{RUN}}}[$__rate_interval])",
                        "{{run_id}} {{metric}}",
                    )
                ],
                draw="bars",
            ),
            8,
            7,
        ),
        lay.place(
            timeseries(
                "other metrics",
                [(f"rlguard_extra_metric{{{RUN}}}", "{{run_id}} {{metric}}")],
                description="Metrics outside docs/METRICS.md, passed through by name.",
            ),
            8,
            7,
        ),
    ]


def build_dashboard() -> dict:
    lay = Layout()
    panels = _overview(lay) + _metric_panels(lay) + _incident_panels(lay)
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": DASHBOARD_UID,
        "title": "rlguard: RLHF run",
        "description": (
            "A PPO-RLHF run guarded by rlguard: collapse signals, constraints, incidents, checkpoints."
        ),
        "tags": ["rlguard", "rlhf"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: line the collapse signals up by time
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "links": [],
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                },
                {
                    "type": "query",
                    "name": "run_id",
                    "label": "Run",
                    "datasource": DS,
                    "definition": "label_values(rlguard_run_info, run_id)",
                    "query": {
                        "query": "label_values(rlguard_run_info, run_id)",
                        "qryType": 1,
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "sort": 1,
                    "regex": "",
                    "options": [],
                },
            ]
        },
        "annotations": {
            "list": [
                builtin,
                annotation(
                    "Incidents",
                    f"increase(rlguard_alerts_by_detector_total{{{RUN}}}[2m]) > 0",
                    "red",
                    "{{severity}} alert: {{detector}}",
                    "{{run_id}}: {{code}}",
                ),
                annotation(
                    "Rollbacks",
                    f"increase(rlguard_rollbacks_total{{{RUN}}}[2m]) > 0",
                    "orange",
                    "rollback",
                    "{{run_id}}",
                ),
                annotation(
                    "Decisions",
                    f"increase(rlguard_decisions_total{{{RUN}}}[2m]) > 0",
                    "yellow",
                    "decision: {{action}}",
                    "{{run_id}} ({{mode}})",
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON differs from the generated"
    )
    ap.add_argument("--output", type=Path, default=OUTPUT)
    args = ap.parse_args(argv)
    errors = validate_dashboard(build_dashboard())
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m dashboards.grafana.generate", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
