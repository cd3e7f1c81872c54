"""CheckTemplate and ClusterCheckTemplate: a check defined once, with declared arguments, used
by flags and requests through `templateRef` and `args` (as Argo Rollouts' AnalysisTemplate)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from flagops.models.common import Model, cel

ARG_NAME = r"^[a-zA-Z][-a-zA-Z0-9_]*$"


class TemplateArg(Model):
    name: str = Field(max_length=63, pattern=ARG_NAME, description="Used as {{args.NAME}} in the check.")
    default: str | None = Field(
        default=None, max_length=2048, description="The value when a reference gives none."
    )
    description: str = Field(default="", max_length=1024, description="What the argument is.")


class TemplatedCheck(Model):
    """The kinds are declared, so the schema can say which one is set; their fields are kept
    as written, since a placeholder need not match a field's pattern until it is filled in."""

    model_config = ConfigDict(**{**Model.model_config, "extra": "allow"})

    http: dict[str, Any] | None = Field(default=None, description="GET a URL (see FeatureFlagSet checks).")
    invariant: dict[str, Any] | None = Field(default=None, description="Compare a value before and after.")
    prometheus: dict[str, Any] | None = Field(default=None, description="Query Prometheus.")
    job: dict[str, Any] | None = Field(default=None, description="Not allowed in a template.")


class CheckTemplateSpec(Model):
    model_config = ConfigDict(
        **Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.check.http), has(self.check.invariant), has(self.check.prometheus)]"
                    ".filter(x, x).size() == 1 && !has(self.check.job)",
                    "a template's check has exactly one of http, invariant, prometheus (a job check stays "
                    "in the set or request that runs it)",
                )
            ]
        },
    )

    args: list[TemplateArg] = Field(
        default_factory=list,
        max_length=16,
        description="The arguments a reference passes, each once; {{args.NAME}} in any string of the "
        "check is replaced by its value.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    check: TemplatedCheck = Field(
        description="A check as in a FeatureFlagSet, without its name (the reference gives it), with "
        "{{args.NAME}} placeholders; validated once its arguments are filled in, when a request is planned."
    )


class CheckTemplateStatus(Model):
    """Templates have no status: they are read when a request is planned."""
