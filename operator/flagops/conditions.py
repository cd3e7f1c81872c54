"""Condition types and reasons, in one place (as Argo Rollouts keeps them), and the rule for
updating a condition list: lastTransitionTime moves only when the status flips."""

from __future__ import annotations

import datetime
from typing import Final

from flagops.models.common import Condition, ConditionStatus

# FeatureFlagSet condition types.
READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
OVERRIDDEN: Final = "Overridden"

# FeatureFlagSet reasons.
APPLIED: Final = "Applied"
ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
ROLLOUT_COMPLETE: Final = "RolloutComplete"
ROLLOUT_FAILED: Final = "RolloutFailed"
CONFIG_MAP_CONFLICT: Final = "ConfigMapConflict"
WORKLOAD_MISSING: Final = "WorkloadMissing"
WORKLOAD_CONFLICT: Final = "WorkloadConflict"
PREREQUISITE_DISABLED: Final = "PrerequisiteDisabled"
DEPENDENCY_CYCLE: Final = "DependencyCycle"
INVALID_SPEC: Final = "InvalidSpec"
AS_EXPECTED: Final = "AsExpected"
HELD_BY_ROLLBACK: Final = "HeldByRollback"
NO_OVERRIDES: Final = "NoOverrides"
RESTARTS_DISABLED: Final = "RestartsDisabled"
WAITING_FOR_WINDOW: Final = "WaitingForWindow"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with `type_` set; keeps the old lastTransitionTime unless status changed."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return (
        [c for c in conditions if c.type != type_] + [updated]
        if previous is None
        else [updated if c.type == type_ else c for c in conditions]
    )


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


# RollbackRequest condition types (Succeeded is the summary, for `kubectl wait`).
APPROVED: Final = "Approved"
FLAGS_APPLIED: Final = "FlagsApplied"
ROLLED_OUT: Final = "RolledOut"
VALIDATED: Final = "Validated"
SUCCEEDED: Final = "Succeeded"

# RollbackRequest reasons.
FLAG_SET_NOT_FOUND: Final = "FlagSetNotFound"
FLAG_SET_INVALID: Final = "FlagSetInvalid"
UNKNOWN_FLAG: Final = "UnknownFlag"
REVISION_NOT_FOUND: Final = "RevisionNotFound"
CHECK_TEMPLATE_NOT_FOUND: Final = "CheckTemplateNotFound"
INVALID_CHECK_ARGS: Final = "InvalidCheckArgs"
AWAITING_APPROVAL: Final = "AwaitingApproval"
BASELINE_UNAVAILABLE: Final = "BaselineUnavailable"
APPLYING_OVERRIDES: Final = "ApplyingOverrides"
ROLLING_OUT: Final = "RollingOut"
ROLLOUT_TIMEOUT: Final = "RolloutTimeout"
VALIDATING: Final = "Validating"
CHECK_FAILED: Final = "CheckFailed"
# A check or trigger refused before it measured anything (reasons on the check, and on the request).
TARGET_NOT_ALLOWED: Final = "TargetNotAllowed"
SECRET_NOT_USABLE: Final = "SecretNotUsable"
# A pass kept failing on something unexpected (both kinds).
INTERNAL_ERROR: Final = "InternalError"
RESTORING: Final = "Restoring"
ROLLBACK_SUCCEEDED: Final = "RollbackSucceeded"
DRILL_SUCCEEDED: Final = "DrillSucceeded"
ABORTED: Final = "Aborted"
DRY_RUN: Final = "DryRun"

# RollbackDrill condition type and reasons.
SCHEDULED: Final = "Scheduled"
DRILL_DUE: Final = "Due"
DRILL_RUNNING: Final = "DrillRunning"
SUSPENDED: Final = "Suspended"
INVALID_SCHEDULE: Final = "InvalidSchedule"
NO_MORE_RUNS: Final = "NoMoreRuns"

# Escalation (an Event reason, and the notification's kind).
ESCALATED: Final = "Escalated"
