"""CheckTemplates filled in with their arguments (flagops.reconcile.templates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flagops.models.checks import Check
from flagops.models.templates import CheckTemplateSpec
from flagops.reconcile import templates as templating

ERROR_RATIO = CheckTemplateSpec.model_validate(
    {
        "args": [{"name": "service"}, {"name": "threshold", "default": "0.01"}],
        "check": {
            "prometheus": {
                "server": "http://prometheus.monitoring:9090",
                "query": 'sum(rate(http_errors_total{service="{{args.service}}"}[1m]))',
                "comparison": "LessThan",
                "threshold": "{{ args.threshold }}",
            },
            "intervalSeconds": 10,
        },
    }
)


def ref(**args: str) -> Check:
    return Check.model_validate(
        {
            "name": "errors",
            "templateRef": {"kind": "ClusterCheckTemplate", "name": "error-ratio"},
            "args": args,
        }
    )


def test_arguments_and_defaults_are_filled_in() -> None:
    check = templating.resolve(ref(service="butler"), ERROR_RATIO, "epic21")
    assert check.name == "errors" and check.kind == "prometheus" and check.template_ref is None
    assert check.prometheus is not None
    assert check.prometheus.query == 'sum(rate(http_errors_total{service="butler"}[1m]))'
    assert check.prometheus.threshold == "0.01"
    assert check.interval_seconds == 10


@pytest.mark.parametrize(
    ("template", "args", "reason", "message"),
    [
        (None, {"service": "b"}, "CheckTemplateNotFound", "ClusterCheckTemplate error-ratio not found;"),
        (ERROR_RATIO, {}, "InvalidCheckArgs", "needs argument service, which has no default"),
        (ERROR_RATIO, {"service": "b", "svc": "x"}, "InvalidCheckArgs", "has no argument svc"),
        (ERROR_RATIO, {"service": "b", "threshold": "low"}, "InvalidCheckArgs", "prometheus.threshold"),
    ],
)
def test_what_is_missing_or_wrong_is_said(
    template: CheckTemplateSpec | None, args: dict[str, str], reason: str, message: str
) -> None:
    with pytest.raises(templating.TemplateError, match=message) as err:
        templating.resolve(ref(**args), template, "epic21")
    assert err.value.reason == reason


def test_a_placeholder_the_template_does_not_declare_is_refused() -> None:
    template = CheckTemplateSpec.model_validate({"check": {"http": {"url": "http://{{args.host}}/healthz"}}})
    with pytest.raises(templating.TemplateError, match=r"uses \{\{args.host\}\}, which it does not declare"):
        templating.resolve(ref(), template, "epic21")


@pytest.mark.parametrize(
    "check",
    [
        {"prometheus": {"server": "http://p:9090", "query": "up", "comparison": "Equal", "threshold": "1",
                        "bearerTokenSecretRef": {"name": "token", "key": "t"}}},
    ],
)  # fmt: skip
def test_a_template_cannot_use_a_secret(check: dict[str, Any]) -> None:
    template = CheckTemplateSpec.model_validate({"check": check})
    with pytest.raises(templating.TemplateError, match="cannot hold a job check, a templateRef or a Secret"):
        templating.resolve(ref(), template, "epic21")


def test_the_example_error_ratio_template_fills_in() -> None:
    example = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "examples/epic21/checktemplates.yaml").read_text()
    )
    check = templating.resolve(
        ref(service="butler"), CheckTemplateSpec.model_validate(example["spec"]), "epic21"
    )
    assert check.prometheus is not None and check.prometheus.threshold == "0.01"
    assert 'service="butler"' in check.prometheus.query and "{{" not in check.prometheus.query
