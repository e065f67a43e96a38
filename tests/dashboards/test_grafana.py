"""The Grafana dashboard: generated file up to date, structurally valid, every query valid PromQL."""

from __future__ import annotations

import copy
import json
import subprocess

import yaml

from rlguard.dashboards.grafana import generate, validate
from rlguard.dashboards.prom_catalog import STEP_METRICS
from tests.dashboards.conftest_ops import REPO, require

GRAFANA = REPO / "dashboards" / "grafana"


def test_committed_dashboard_is_the_generated_one():
    assert generate.main(["--check"]) == 0, "run: python -m dashboards.grafana.generate"
    d = json.loads(generate.OUTPUT.read_text())
    assert d["schemaVersion"] == 41 and d["uid"] == "rlguard-run"


def test_generated_dashboard_is_valid_and_covers_the_signals():
    d = generate.build_dashboard()
    assert validate.validate_dashboard(d) == []
    titles = {p["title"] for p in d["panels"]}
    for needed in (
        "reward",
        "kl",
        "perplexity",
        "response_length",
        "entropy",
        "truncated_fraction",
        "kl_coef",
        "clip_range",
        "lr",
        "checkpoints by health",
        "tokens_per_second",
    ):
        assert needed in titles
    assert {m.name for m in STEP_METRICS} <= titles
    annotations = {a["name"] for a in d["annotations"]["list"]}
    assert {"Incidents", "Rollbacks"} <= annotations
    run_var = next(v for v in d["templating"]["list"] if v["name"] == "run_id")
    assert run_var["definition"] == "label_values(rlguard_run_info, run_id)"


def test_validator_catches_what_it_claims_to():
    d = generate.build_dashboard()
    bad = copy.deepcopy(d)
    bad["panels"][1]["targets"][0]["expr"] = 'rlguard_rewards{run_id=~"$run_id"}'
    bad["panels"][2]["gridPos"] = dict(bad["panels"][1]["gridPos"])
    bad["panels"][3]["targets"][0]["expr"] = 'rlguard_step{run_id=~"$run}'
    bad["templating"]["list"] = [v for v in bad["templating"]["list"] if v["name"] != "datasource"]
    errors = "\n".join(validate.validate_dashboard(bad))
    assert "rlguard_rewards is not a metric the exporter serves" in errors
    assert "overlaps another panel" in errors
    assert "does not filter by the run_id variable" in errors
    assert "variable 'datasource' missing" in errors


def test_every_query_is_valid_promql_for_promtool(tmp_path):
    exprs = [validate.concrete(e) for _, e in validate.queries(generate.build_dashboard())]
    rules = {
        "groups": [
            {
                "name": "grafana-panels",
                "rules": [{"record": f"rlguard_grafana_check_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_provisioning_files_point_at_prometheus_and_a_dashboard_folder():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "rlguard.yml").read_text())
    provider = dash["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
