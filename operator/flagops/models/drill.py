"""RollbackDrill: the plan's drill schedule. Each due time runs one drill RollbackRequest."""

from __future__ import annotations

import datetime

from pydantic import Field

from flagops.models.checks import MAX_CHECKS, Check
from flagops.models.common import CONDITIONS_EXTRA, TIME_ZONE, Condition, FlagName, Model, ObjectName, cel
from flagops.models.flagset import MAX_FLAGS

# Five fields (minute hour day-of-month month day-of-week), or six with seconds first, or a macro.
SCHEDULE = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4,5}\S+)$"
MAX_RUNS = 20


class DrillTargets(Model):
    """The plan's timing targets for a rollback, which each drill's durations are held to."""

    decision_seconds: int = Field(
        default=900, ge=1, description="Detected to requested (the plan: under 15 minutes)."
    )
    execute_seconds: int = Field(
        default=1800, ge=1, description="Go-ahead to restarts done (the plan: under 30 minutes)."
    )
    validate_seconds: int = Field(
        default=900, ge=1, description="Restarts done to checks passed (the plan: under 15 minutes)."
    )


class RollbackDrillSpec(Model):
    flag_set: ObjectName = Field(description="The FeatureFlagSet, in this namespace, to drill.")
    flags: list[FlagName] = Field(
        default_factory=list,
        max_length=MAX_FLAGS,
        description="The flags each drill rolls back. Set this or all, not both.",
        json_schema_extra={"default": [], "x-kubernetes-list-type": "set"},
    )
    all: bool = Field(
        default=False, description="Drill the rollback of every flag (the emergency procedure)."
    )
    emergency: bool = Field(
        default=False, description="Drill the emergency procedure: the approval gate is skipped."
    )
    checks: list[Check] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks each drill runs, in addition to the flags' own checks.",
        json_schema_extra={"default": []},
    )
    owner: str = Field(min_length=1, max_length=253, description="Who owns this drill (the plan's Owner).")
    stage: str = Field(min_length=1, max_length=63, description="The plan's stage, e.g. 21_01a.")
    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=SCHEDULE,
        description="When drills run, as cron: minute hour day-of-month month day-of-week (a sixth field "
        "in front gives seconds), or @hourly, @daily, @weekly, @monthly, @yearly. Set this or at.",
    )
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        pattern=TIME_ZONE,
        description="IANA time zone of the schedule, e.g. Europe/Berlin.",
    )
    at: datetime.datetime | None = Field(
        default=None,
        description="One drill at this time (e.g. before the production deploy). Set this or schedule.",
    )
    suspend: bool = Field(default=False, description="Run no drill while true.")
    history_limit: int = Field(
        default=3,
        ge=1,
        le=MAX_RUNS,
        description="How many of its finished RollbackRequests to keep (older ones are deleted).",
    )
    reason: str = Field(default="", max_length=1024, description="Written into each drill request's reason.")
    targets: DrillTargets = Field(
        default_factory=DrillTargets, description="The timing targets each drill is held to."
    )


SPEC_VALIDATIONS = (
    cel(
        "(size(self.flags) > 0) != self.all",
        "name the flags to drill in flags, or set all: true (one of the two)",
    ),
    cel("has(self.schedule) != has(self.at)", "set schedule (recurring) or at (once), one of the two"),
)


class DrillRun(Model):
    request: str = Field(description="The drill RollbackRequest.")
    scheduled_at: datetime.datetime = Field(description="The due time it ran for.")
    phase: str = Field(default="Pending", description="The request's phase.")
    completed_at: datetime.datetime | None = Field(default=None, description="When it ended.")
    decision_seconds: float | None = Field(default=None, description="Its time to decision.")
    execute_seconds: float | None = Field(default=None, description="Its time to execute.")
    validate_seconds: float | None = Field(default=None, description="Its time to validate.")
    within_targets: bool | None = Field(
        default=None, description="Whether it succeeded within the targets; empty until it ends."
    )
    message: str = Field(default="", description="The outcome against the targets.")


class RollbackDrillStatus(Model):
    observed_generation: int | None = Field(default=None, description="The .metadata.generation acted on.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Scheduled.", json_schema_extra=CONDITIONS_EXTRA
    )
    next_run_at: datetime.datetime | None = Field(default=None, description="When the next drill is due.")
    last_run_at: datetime.datetime | None = Field(default=None, description="The due time of the last drill.")
    state: str | None = Field(
        default=None,
        description="The table's status: Scheduled (never run yet), Running, the last drill's result "
        "(Succeeded, Failed, Aborted, MissedTargets), Suspended or InvalidSchedule.",
    )
    last_request: str | None = Field(default=None, description="The last drill's RollbackRequest.")
    last_result: str | None = Field(
        default=None,
        description="The last drill's outcome: its phase, or Missed targets when it was too slow.",
    )
    runs: list[DrillRun] = Field(
        default_factory=list, max_length=MAX_RUNS, description="The drills kept (historyLimit), newest first."
    )
    message: str = Field(default="", description="What happened last.")
