"""The shipped alert rules and example configs: valid for the real tools, unit-tested with
`promtool test rules`, and naming only series the exporter serves."""

from __future__ import annotations

import re
import subprocess

import yaml

from rlguard.dashboards.prom_catalog import all_family_names
from tests.dashboards.conftest_ops import PROM_DIR, REPO, require

RULES = PROM_DIR / "rules.yml"
REQUIRED_ALERTS = {
    "RLGuardCollapseDetected",
    "RLGuardRollbackPerformed",
    "RLGuardRunHalted",
    "RLGuardTrainingStalled",
    "RLGuardSupervisorDown",
    "RLGuardSupervisorAbsent",
    "RLGuardKLAboveBudget",
    "RLGuardNonFiniteMetrics",
}


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=PROM_DIR)


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules():
    result = run([require("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass():
    result = run([require("promtool"), "test", "rules", "rules_test.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_unit_tests_catch_a_broken_rule(tmp_path):
    """A rule with a wrong threshold makes rules_test.yml fail: the tests test something."""
    broken = RULES.read_text().replace("rlguard_nonfinite_metrics > 0", "rlguard_nonfinite_metrics > 5")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yml").write_text(broken)
    (tmp_path / "rules_test.yml").write_text((PROM_DIR / "rules_test.yml").read_text())
    result = subprocess.run(
        [require("promtool"), "test", "rules", "rules_test.yml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "RLGuardNonFiniteMetrics" in result.stdout + result.stderr


def test_every_alert_has_severity_and_the_three_annotations_and_a_runbook_section():
    readme = (REPO / "dashboards" / "README.md").read_text().lower()
    names = set()
    for rule in alert_rules():
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"### {anchor}" in readme, f"README has no runbook section for {rule['alert']}"
    assert REQUIRED_ALERTS <= names


def test_rules_only_name_series_the_exporter_serves():
    known = set(all_family_names())
    for rule in alert_rules():
        for family in re.findall(r"\b(rlguard_[a-z0-9_]+)", rule["expr"]):
            assert family in known, f"{rule['alert']}: {family} is not exported"


def test_example_prometheus_and_alertmanager_configs_are_valid():
    result = run([require("promtool"), "check", "config", "prometheus.example.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([require("amtool"), "check-config", "alertmanager.example.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    scrape = yaml.safe_load((PROM_DIR / "prometheus.example.yml").read_text())["scrape_configs"]
    assert [s["job_name"] for s in scrape] == ["rlguard"]  # the job the supervisor-down rules look for


def test_readme_names_every_exported_family():
    readme = (REPO / "dashboards" / "README.md").read_text()
    missing = [name for name in all_family_names() if f"`{name}`" not in readme]
    assert not missing, f"dashboards/README.md does not mention {missing}"
