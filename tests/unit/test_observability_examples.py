"""The shipped PrometheusRule and Grafana dashboard are valid and use metrics flagops exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from flagops import metrics
from flagops_dev import devcluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "observability"
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def exported() -> set[str]:
    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.add(family.name)
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(flagops_[a-z_]+)", expr))


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def rule_exprs() -> list[str]:
    rule = yaml.safe_load((EXAMPLES / "prometheusrule.yaml").read_text())
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_rules_pass_promtool(tmp_path: Path) -> None:
    rule = yaml.safe_load((EXAMPLES / "prometheusrule.yaml").read_text())
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = devcluster.prometheus_binary().with_name("promtool")
    result = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    names = exported()
    for expr in rule_exprs() + dashboard_exprs():
        unknown = {name for name in referenced(expr) if base_name(name) not in names and name not in names}
        assert not unknown, f"{expr} uses metrics flagops does not export: {unknown}"


def test_every_metric_is_on_the_dashboard() -> None:
    used = {base_name(name) for expr in dashboard_exprs() for name in referenced(expr)}
    assert exported() <= used | {base_name(n) for n in used}, exported() - used


def test_chart_rules_are_the_example_rules() -> None:
    chart = yaml.safe_load((EXAMPLES.parents[1] / "charts/flagops/files/rules.yaml").read_text())
    example = yaml.safe_load((EXAMPLES / "prometheusrule.yaml").read_text())
    assert chart == example["spec"], "copy examples/observability/prometheusrule.yaml spec to the chart"
