"""Validation checks: what proves that a rollback worked.

A check is one of several kinds (`http`, `job`, `invariant`; `prometheus` comes from the
observability work), set as exactly one sub-object, the way a Pod probe is `httpGet` or
`exec`. Every kind shares the same measurement policy: interval, successes needed,
failures tolerated, and a deadline, so nothing waits forever.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from flagops.models.common import Model, cel

CHECK_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_CHECKS = 16
MAX_MEASUREMENTS = 5


class HttpCheck(Model):
    url: str = Field(
        description="URL to GET, e.g. http://butler.epic21.svc:8080/healthz.",
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
    )
    expected_status: int = Field(
        default=200, ge=100, le=599, description="HTTP status that counts as success."
    )
    json_path: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^\$?(\.[A-Za-z0-9_-]+|\[[0-9]+\])+$",
        description="A value in the JSON answer, as $.field.sub or $.items[0].name.",
    )
    expected_value: str | None = Field(
        default=None,
        max_length=1024,
        description='The value jsonPath must have (JSON text: ok, true, 3, "3" all compare as written).',
    )
    timeout_seconds: int = Field(default=5, ge=1, le=60, description="Timeout of one request.")


class JobCheck(Model):
    template: dict[str, Any] = Field(
        description="A batch/v1 JobSpec, e.g. the smoke tests. The check passes when the Job completes "
        "and fails when the Job fails.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )


class InvariantComparison(StrEnum):
    UNCHANGED = "Unchanged"
    NOT_DECREASED = "NotDecreased"
    NOT_INCREASED = "NotIncreased"


class InvariantCheck(Model):
    http: HttpCheck = Field(
        description="Where the value is read (jsonPath selects it), before the flip and after."
    )
    comparison: InvariantComparison = Field(
        default=InvariantComparison.UNCHANGED,
        description="Unchanged, NotDecreased or NotIncreased: how the value after must relate to the "
        "value before.",
    )


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253, description="Name of a Secret in the same namespace.")
    key: str = Field(min_length=1, max_length=253, description="Key in that Secret.")


class Comparison(StrEnum):
    LESS_THAN = "LessThan"
    LESS_THAN_OR_EQUAL = "LessThanOrEqual"
    GREATER_THAN = "GreaterThan"
    GREATER_THAN_OR_EQUAL = "GreaterThanOrEqual"
    EQUAL = "Equal"


class OnEmpty(StrEnum):
    FAIL = "Fail"
    PASS = "Pass"
    WAIT = "Wait"


# A decimal number written as a string: the API conventions keep floats out of specs.
DECIMAL = r"^-?[0-9]+(\.[0-9]+)?([eE]-?[0-9]+)?$"


class PrometheusQuery(Model):
    server: str = Field(
        description="Base URL of the Prometheus server, e.g. http://prometheus.monitoring:9090.",
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
    )
    query: str = Field(
        min_length=1, max_length=4096, description="PromQL; every series it returns is compared."
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="A Secret key holding a bearer token for the server."
    )
    timeout_seconds: int = Field(default=10, ge=1, le=60, description="Timeout of one query.")


class PrometheusCheck(PrometheusQuery):
    comparison: Comparison = Field(description="How each value must compare with the threshold to pass.")
    threshold: str = Field(
        pattern=DECIMAL, max_length=64, description='The threshold, as a decimal string, e.g. "0.02".'
    )
    on_empty: OnEmpty = Field(
        default=OnEmpty.WAIT,
        description="What an empty result means: Fail, Pass, or Wait (inconclusive: measure again "
        "until the deadline).",
    )


class TemplateKind(StrEnum):
    CHECK_TEMPLATE = "CheckTemplate"
    CLUSTER_CHECK_TEMPLATE = "ClusterCheckTemplate"


class TemplateRef(Model):
    kind: TemplateKind = Field(
        default=TemplateKind.CHECK_TEMPLATE,
        description="CheckTemplate (in the namespace of the set or request) or ClusterCheckTemplate.",
    )
    name: str = Field(min_length=1, max_length=253, description="Name of the template.")


class Check(Model):
    model_config = ConfigDict(
        **Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.http), has(self.job), has(self.invariant), has(self.prometheus), "
                    "has(self.templateRef)].filter(x, x).size() == 1",
                    "a check has exactly one of http, job, invariant, prometheus, templateRef",
                ),
                cel(
                    "!has(self.args) || size(self.args) == 0 || has(self.templateRef)",
                    "args are for a templateRef: remove them, or name the template",
                ),
            ]
        },
    )

    name: str = Field(
        max_length=63, pattern=CHECK_NAME, description="Name of the check, unique within a request."
    )
    http: HttpCheck | None = Field(
        default=None, description="GET a URL; pass on the expected status (and value)."
    )
    job: JobCheck | None = Field(default=None, description="Run a Job; pass when it completes.")
    invariant: InvariantCheck | None = Field(
        default=None, description="Read a value before the flip and compare it after."
    )
    prometheus: PrometheusCheck | None = Field(
        default=None, description="Query Prometheus; pass when every value compares well with the threshold."
    )
    template_ref: TemplateRef | None = Field(
        default=None,
        description="Use a CheckTemplate or ClusterCheckTemplate; resolved with args into the request's "
        "plan when it is planned (its timing fields then come from the template).",
    )
    args: dict[str, str] = Field(
        default_factory=dict, description="Values of the template's arguments, by name."
    )
    initial_delay_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="Wait this long after the restarts before the first measurement.",
    )
    interval_seconds: int = Field(default=5, ge=1, le=3600, description="Time between measurements.")
    successes: int = Field(default=1, ge=1, le=100, description="Consecutive passing measurements needed.")
    failure_limit: int = Field(
        default=0, ge=0, le=100, description="Failed measurements tolerated; one more fails the check."
    )
    deadline_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="The check fails if it has not passed this long after it started.",
    )

    @property
    def kind(self) -> str:
        if self.http:
            return "http"
        if self.job:
            return "job"
        if self.template_ref:
            return "template"
        return "invariant" if self.invariant else "prometheus"
