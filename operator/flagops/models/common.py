"""Types shared by both kinds: the API group, conditions, the model base class."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP = "flagops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# A Kubernetes object name (DNS-1123 subdomain), as the API server checks it.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A flag name doubles as an environment variable name (envFrom), hence the upper case.
FLAG_NAME = r"^[A-Z][A-Z0-9_]*$"
FLAG_NAME_MAX = 63

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
FlagName = Annotated[str, Field(min_length=1, max_length=FLAG_NAME_MAX, pattern=FLAG_NAME)]


# An IANA time zone name such as Europe/Berlin (whether it exists is checked by flagops).
TIME_ZONE = r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$"


def cel(rule: str, message: str, **extra: str) -> dict[str, JsonValue]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message, **extra}


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored when parsing: the API server has already pruned what the
    schema does not declare, and a newer CRD must not break an older operator.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """Mirrors metav1.Condition, with its constraints."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="A CamelCase word for the cause of the last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(default="", description="What happened, and what to do about it.", max_length=32768)
    last_transition_time: datetime.datetime = Field(
        description="When the condition last changed from one status to another."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set from."
    )


CONDITIONS_EXTRA: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
