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


class Check(Model):
    model_config = ConfigDict(
        **Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.http), has(self.job), has(self.invariant)].filter(x, x).size() == 1",
                    "a check has exactly one of http, job, invariant",
                )
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
        return "http" if self.http else "job" if self.job else "invariant"
