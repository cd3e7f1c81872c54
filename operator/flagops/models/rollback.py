"""RollbackRequest: flip flags to their safe values, restart, validate, and time it all."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from flagops.models.checks import MAX_CHECKS, MAX_MEASUREMENTS, Check
from flagops.models.common import (
    CONDITIONS_EXTRA,
    Condition,
    FlagName,
    Model,
    ObjectName,
    cel,
)
from flagops.models.flagset import MAX_FLAGS, FlagValue, Scenario, WorkloadKind, WorkloadState

IMMUTABLE = (
    "spec is immutable once created (only approved, abort, release and, after it ends, review may "
    "change); create a new request"
)


def immutable(field_name: str) -> dict[str, Any]:
    """A transition rule: this field keeps its value after creation."""
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{field_name} is immutable: {IMMUTABLE}")]}


class ActionItem(Model):
    description: str = Field(min_length=1, max_length=1024, description="What is to be done.")
    owner: str = Field(min_length=1, max_length=253, description="Who does it.")
    due: datetime.date | None = Field(
        default=None,
        description="By when (YYYY-MM-DD).",
        json_schema_extra={"maxLength": 10},  # bounds the cost of the CEL rule comparing reviews
    )
    done: bool = Field(default=False, description="Whether it is done.")


class Review(Model):
    """The plan's post-incident record: root cause and lessons learned."""

    root_cause: str = Field(default="", max_length=4096, description="What caused the incident.")
    went_well: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=32, description="What went well."
    )
    could_improve: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=32, description="What could improve."
    )
    action_items: list[ActionItem] = Field(
        default_factory=list, max_length=32, description="Action items, each with an owner."
    )
    authors: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=16, description="Who wrote the review."
    )


class RollbackRequestSpec(Model):
    flag_set: ObjectName = Field(
        description="The FeatureFlagSet, in this namespace, whose flags to roll back.",
        json_schema_extra=immutable("flagSet"),
    )
    flags: list[FlagName] = Field(
        default_factory=list,
        max_length=MAX_FLAGS,
        description="The flags to roll back to their safeValue, each once. Set this or all, not both.",
        json_schema_extra={"default": [], "x-kubernetes-list-type": "set", **immutable("flags")},
    )
    all: bool = Field(
        default=False,
        description="Roll back every flag of the set (the plan's emergency rollback).",
        json_schema_extra=immutable("all"),
    )
    to_revision: int | None = Field(
        default=None,
        ge=1,
        description="Serve every flag as the set's revision N served it (kubectl flagops history SET "
        "lists them). Set this, flags or all: one of the three.",
        json_schema_extra=immutable("toRevision"),
    )
    emergency: bool = Field(
        default=False,
        description="Skip the approval gate; the rollback is still validated and recorded.",
        json_schema_extra=immutable("emergency"),
    )
    reason: str = Field(
        default="",
        max_length=1024,
        description="Why the rollback is requested.",
        json_schema_extra=immutable("reason"),
    )
    incident: str = Field(
        default="",
        max_length=128,
        description="Incident reference, e.g. INC-2025-11-042.",
        json_schema_extra=immutable("incident"),
    )
    detected_at: datetime.datetime | None = Field(
        default=None,
        description="When the problem was detected; gives time to decision.",
        json_schema_extra=immutable("detectedAt"),
    )
    checks: list[Check] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks to run after the restarts, in addition to the flags' own checks.",
        json_schema_extra={"default": [], **immutable("checks")},
    )
    dry_run: bool = Field(
        default=False,
        description="Write the plan to status and change nothing.",
        json_schema_extra=immutable("dryRun"),
    )
    drill: bool = Field(
        default=False,
        description="Roll back, validate and time it, then restore the previous values (a staging drill).",
        json_schema_extra=immutable("drill"),
    )
    approved: bool = Field(
        default=False, description="Approval, where the set's approval policy asks for one. May be set later."
    )
    approved_by: str | None = Field(
        default=None,
        max_length=253,
        description="Who approves: your own user name, set together with approved: true. The API server "
        "checks it against the request's user and the set's approvers (ValidatingAdmissionPolicy).",
        json_schema_extra={
            "x-kubernetes-validations": [cel("self == oldSelf", "approvedBy cannot change once set")]
        },
    )
    abort: bool = Field(
        default=False,
        description="Stop the request. What was already applied stays applied (see status). "
        "May be set later.",
    )
    release: bool = Field(
        default=False,
        description="Lift the lock: the flags follow the set's spec again. May be set later.",
    )
    review: Review | None = Field(
        default=None,
        description="The post-incident review: root cause, what went well, what could improve, action "
        "items. Added or edited once the request has ended; `kubectl flagops report` prints it with the "
        "timeline.",
    )


SPEC_VALIDATIONS = (
    cel(
        "[size(self.flags) > 0, self.all, has(self.toRevision)].filter(x, x).size() == 1",
        "name the flags to roll back in flags, set all: true, or name a revision in toRevision "
        "(one of the three)",
    ),
    cel(
        "has(self.detectedAt) == has(oldSelf.detectedAt)",
        f"detectedAt is immutable: {IMMUTABLE}",
        reason="FieldValueForbidden",
    ),
    cel("!(self.dryRun && self.drill)", "dryRun and drill exclude each other: choose one"),
)


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPLYING = "Applying"
    ROLLING_OUT = "RollingOut"
    VALIDATING = "Validating"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"
    PLANNED = "Planned"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED, Phase.PLANNED)


# On the whole object, so that it sees the phase. A transition rule (it reads oldSelf): a create
# carrying a review, as a restore from backup does, is admitted.
ROOT_VALIDATIONS = (
    cel(
        # Optional-typed comparisons (spec.?review) are costed as unbounded by the API server.
        "(has(self.spec.review) == has(oldSelf.spec.review)"
        " && (!has(self.spec.review) || oldSelf.spec.review == self.spec.review))"
        " || (has(self.status) && has(self.status.phase) && self.status.phase in ["
        + ", ".join(f"'{p}'" for p in Phase if p.terminal)
        + "])",
        "spec.review can be written once the request has ended (Succeeded, Failed, Aborted or Planned); "
        "wait for it to end",
        fieldPath=".spec.review",
    ),
)


class FlagChange(Model):
    name: str = Field(description="The flag.")
    from_: FlagValue = Field(alias="from", description="Value served before the rollback.")
    to: FlagValue = Field(
        description="Value served after it (the safe value, or false where a prerequisite is rolled back)."
    )
    requested: bool = Field(
        default=True, description="False when it changes only because a flag it requires does."
    )


class PlannedWorkload(Model):
    kind: WorkloadKind = Field(description="Kind of the workload.")
    name: str = Field(description="Name of the workload.")
    flags: list[str] = Field(default_factory=list, description="Its flags that change.")
    from_hash: str = Field(default="", description="Flags hash before the rollback.")
    to_hash: str = Field(default="", description="Flags hash after it.")


class PlannedCheck(Model):
    name: str = Field(description="Name of the check.")
    type: str = Field(description="http, job, invariant or prometheus.")
    source: str = Field(description="Where it comes from: the request, or flag NAME.")
    spec: dict[str, Any] | None = Field(
        default=None,
        description="The check as resolved when planned; later edits of the set do not change it.",
        # Validated when the check was written (in the set or the request); kept as it was.
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )


class Plan(Model):
    flags: list[FlagChange] = Field(default_factory=list, description="Flags whose served value changes.")
    unchanged: list[str] = Field(
        default_factory=list, description="Requested flags already at their safe value (no restart for them)."
    )
    workloads: list[PlannedWorkload] = Field(default_factory=list, description="Workloads that restart.")
    checks: list[PlannedCheck] = Field(default_factory=list, description="Checks run after the restarts.")
    holds: dict[str, FlagValue] = Field(
        default_factory=dict,
        description="The requested flags and the safe values this request holds them at.",
    )
    rollout_timeout_seconds: int = Field(
        default=600,
        description="How long one workload's restart may take (the set's rollout.timeoutSeconds).",
    )
    scenario: Scenario | None = Field(
        default=None,
        description="The authority matrix's row: SingleFlagInWindow, SingleFlagLate, MultiFlag or Emergency.",
    )
    approval_required: bool = Field(
        default=False, description="Whether the approval policy asks for approval."
    )
    approval_reason: str = Field(default="", description="Why approval is, or is not, required.")
    escalation_after_seconds: int | None = Field(
        default=None,
        description="The set's notifications.escalation.afterSeconds when planned; empty: no escalation.",
    )


class Measurement(Model):
    at: datetime.datetime = Field(description="When it was taken.")
    value: str = Field(default="", description="What was observed.")
    passed: bool | None = Field(default=None, description="Whether it passed; empty when inconclusive.")
    message: str = Field(default="", description="Details.")
    refused: str | None = Field(
        default=None,
        description="Why no measurement could be taken at all (TargetNotAllowed, SecretNotUsable); "
        "it fails the check at once.",
    )


class CheckPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"


class CheckResult(Model):
    name: str = Field(description="Name of the check.")
    type: str = Field(description="http, job, invariant or prometheus.")
    source: str = Field(default="", description="The request, or flag NAME.")
    target: str = Field(default="", description="What is measured: the resolved URL, Job or query.")
    expectation: str = Field(default="", description="What counts as passing, e.g. status 200, threshold.")
    phase: CheckPhase = Field(default=CheckPhase.PENDING, description="Pending, Running, Passed or Failed.")
    baseline: str | None = Field(default=None, description="The value read before the flip (invariant).")
    observed: str | None = Field(default=None, description="The last value observed.")
    attempts: int = Field(default=0, description="Measurements taken.")
    consecutive_successes: int = Field(default=0, description="Passing measurements in a row.")
    failures: int = Field(default=0, description="Failed measurements.")
    measurements: list[Measurement] = Field(
        default_factory=list, max_length=MAX_MEASUREMENTS, description="The last few measurements."
    )
    started_at: datetime.datetime | None = Field(default=None, description="When the check started.")
    next_at: datetime.datetime | None = Field(default=None, description="When the next measurement is due.")
    completed_at: datetime.datetime | None = Field(default=None, description="When it passed or failed.")
    reason: str | None = Field(
        default=None, description="Why it failed without measuring: TargetNotAllowed or SecretNotUsable."
    )
    message: str = Field(default="", description="Outcome, in words.")

    @property
    def done(self) -> bool:
        return self.phase in (CheckPhase.PASSED, CheckPhase.FAILED)


class WorkloadResult(Model):
    kind: WorkloadKind = Field(description="Kind of the workload.")
    name: str = Field(description="Name of the workload.")
    state: WorkloadState = Field(
        default=WorkloadState.PENDING, description="Pending, Progressing, Ready or Missing."
    )
    message: str = Field(default="", description="Details.")
    ready_at: datetime.datetime | None = Field(default=None, description="When its rollout completed.")


class Durations(Model):
    time_to_decision: str | None = Field(default=None, description="detectedAt to request created.")
    time_to_execute: str | None = Field(
        default=None, description="Go-ahead (approval or start) to restarts done."
    )
    time_to_validate: str | None = Field(default=None, description="Restarts done to checks passed.")
    time_to_restore: str | None = Field(
        default=None, description="Drill only: checks passed to values restored."
    )
    total: str | None = Field(default=None, description="Request created to completed.")


class Seconds(Model):
    time_to_decision: float | None = Field(default=None, description="timeToDecision in seconds.")
    time_to_execute: float | None = Field(default=None, description="timeToExecute in seconds.")
    time_to_validate: float | None = Field(default=None, description="timeToValidate in seconds.")
    time_to_restore: float | None = Field(default=None, description="timeToRestore in seconds.")
    total: float | None = Field(default=None, description="total in seconds.")


class RollbackRequestStatus(Model):
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last acted on."
    )
    phase: Phase | None = Field(default=None, description="Where the request is in its lifecycle.")
    message: str = Field(default="", description="What happened last, and what to do if anything.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Approved, FlagsApplied, RolledOut, Validated and the summary Succeeded.",
        json_schema_extra=CONDITIONS_EXTRA,
    )
    plan: Plan | None = Field(
        default=None, description="What the rollback changes, written before anything changes."
    )
    flags_summary: str = Field(default="", description="The flags, for the printer column.")
    applied: list[str] = Field(
        default_factory=list, description="Flags whose override is in the set's status (the lock)."
    )
    locked: bool = Field(default=False, description="Whether this request still holds its flags.")
    workloads: list[WorkloadResult] = Field(default_factory=list, description="Per-workload rollout results.")
    checks: list[CheckResult] = Field(default_factory=list, description="Per-check results.")
    started_at: datetime.datetime | None = Field(
        default=None, description="When flagops picked the request up."
    )
    approved_at: datetime.datetime | None = Field(
        default=None, description="When it was approved (or needed none)."
    )
    approved_by: str | None = Field(default=None, description="Who approved, as admitted by the API server.")
    flags_applied_at: datetime.datetime | None = Field(
        default=None, description="When the overrides took effect."
    )
    rollout_completed_at: datetime.datetime | None = Field(
        default=None, description="When the restarts completed."
    )
    validated_at: datetime.datetime | None = Field(default=None, description="When every check passed.")
    restored_at: datetime.datetime | None = Field(default=None, description="Drill only: values restored.")
    escalated_at: datetime.datetime | None = Field(
        default=None, description="When the escalation receiver was notified (once per request)."
    )
    escalation: str = Field(default="", description="What the escalation said.")
    completed_at: datetime.datetime | None = Field(
        default=None, description="When a terminal phase was reached."
    )
    durations: Durations = Field(default_factory=Durations, description="Durations, readable (12.4s, 3m05s).")
    seconds: Seconds = Field(default_factory=Seconds, description="The same durations in seconds.")
