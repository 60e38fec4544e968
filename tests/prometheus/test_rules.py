"""The shipped rules (docker/prometheus/bghttp-rules.yml) pass ``promtool check rules`` and their unit tests."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.prometheus.support import RULES, RULES_TESTS, require_tool
from tests.support import PROJECT_ROOT


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = _promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in yaml.safe_load(RULES_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert len(alerts) == 5
    assert alerts - firing == set(), "alerts with no test where they fire"
    assert alerts - quiet == set(), "alerts with no test where they stay quiet"


def test_the_operations_page_shows_every_rule_as_shipped() -> None:
    page = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        assert name in page, f"{name} is not in docs/operations.md"
        if "record" in rule:
            assert rule["expr"] in page, f"the expression of {name} in docs/operations.md differs from the rules file"


def test_the_example_configuration_loads_the_rules() -> None:
    result = _promtool("check", "config", str(RULES.parent / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout + result.stderr
