"""FeatureFlagSet: a team's flags, reconciled into a ConfigMap the workloads consume."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator

from flagops.models.checks import DECIMAL, MAX_CHECKS, Check, Comparison, PrometheusQuery, SecretKeyRef
from flagops.models.common import (
    CONDITIONS_EXTRA,
    TIME_ZONE,
    Condition,
    FlagName,
    Model,
    ObjectName,
    cel,
)

MAX_FLAGS = 128
MAX_REQUIRES = 8
MAX_WORKLOADS = 16


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class WorkloadRef(Model):
    kind: WorkloadKind = Field(
        default=WorkloadKind.DEPLOYMENT, description="Deployment, StatefulSet or DaemonSet."
    )
    name: ObjectName = Field(description="Name of the workload, in the set's namespace.")


class Trigger(Model):
    name: str = Field(
        max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Name of the trigger."
    )
    prometheus: PrometheusQuery = Field(description="The query evaluated on a timer.")
    comparison: Comparison = Field(
        default=Comparison.GREATER_THAN, description="How a value must compare with the threshold to breach."
    )
    threshold: str = Field(
        pattern=DECIMAL, max_length=64, description='The threshold, as a decimal string, e.g. "0.05".'
    )
    for_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="How long the breach must hold before a rollback is requested.",
    )
    interval_seconds: int = Field(default=15, ge=1, le=3600, description="Time between evaluations.")
    emergency: bool = Field(
        default=False, description="Request the rollback as an emergency (no approval gate)."
    )


class FlagType(StrEnum):
    BOOLEAN = "boolean"
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    OBJECT = "object"


# A flag's value, of its type. The schema keeps any JSON (a structural schema has no union
# type); the type is checked by the chart's flag-type policy at admission and by flagops.
# Parsed as any JSON, so that a value of the wrong type gets the validator's message.
FlagValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]


def type_error(flag: str, field: str, type_: FlagType, value: object) -> str | None:
    """What is wrong with `value` as the `field` of a flag of `type_` (None: nothing)."""
    ok = {
        FlagType.BOOLEAN: isinstance(value, bool),
        FlagType.STRING: isinstance(value, str),
        FlagType.INTEGER: isinstance(value, int) and not isinstance(value, bool),
        FlagType.NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
        FlagType.OBJECT: isinstance(value, dict),
    }[type_]
    if ok:
        return None
    article = "an" if type_ in (FlagType.INTEGER, FlagType.OBJECT) else "a"
    return f"flag {flag} is of type {type_}: its {field} must be {article} {type_}"


class Flag(Model):
    model_config = ConfigDict(
        **Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.requires) || !(self.name in self.requires)",
                    "a flag cannot require itself",
                    messageExpression="'flag ' + self.name + ' requires itself: remove it from its requires'",
                )
            ]
        },
    )

    name: FlagName = Field(
        description="Flag name, usable as an environment variable: upper case, digits, underscores."
    )
    type: FlagType = Field(
        default=FlagType.BOOLEAN,
        description="boolean (served from enabled), string, integer, number or object (served from value).",
    )
    enabled: bool = Field(default=False, description="Whether a boolean flag is on.")
    value: FlagValue | None = Field(
        default=None, description="The value a string, integer, number or object flag serves (of its type)."
    )
    safe_value: FlagValue | None = Field(
        default=None,
        description="The value a rollback restores (the known-good state), of the flag's type; "
        "default false for a boolean flag, required for the others.",
    )
    description: str = Field(default="", max_length=4096, description="What the flag changes.")
    owner: str = Field(default="", max_length=253, description="Who owns the flag (team or person).")
    stage: str = Field(
        default="", max_length=63, description="Rollout stage the flag belongs to, e.g. 21_01a."
    )
    rollback_impact: str = Field(
        default="", max_length=4096, description="What a rollback of this flag does to users and data."
    )
    requires: list[FlagName] = Field(
        default_factory=list,
        max_length=MAX_REQUIRES,
        description="Flags of this set that must be enabled before this one takes effect, each once.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    workloads: list[WorkloadRef] = Field(
        default_factory=list,
        max_length=MAX_WORKLOADS,
        description="Workloads in this namespace that consume the flag and restart when it changes.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["kind", "name"]},
    )
    checks: list[Check] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks that prove a rollback of this flag worked (run after its restarts).",
    )
    triggers: list[Trigger] = Field(
        default_factory=list,
        max_length=8,
        description="Conditions that start an automatic rollback of this flag.",
    )

    @model_validator(mode="after")
    def _values_of_its_type(self) -> Flag:
        if self.type == FlagType.BOOLEAN:
            if self.value is not None:
                raise ValueError(f"flag {self.name} is a boolean: set enabled, not value (or give it a type)")
            if self.safe_value is None:
                self.safe_value = False
        else:
            for field in ("value", "safe_value"):
                if getattr(self, field) is None:
                    wire = "safeValue" if field == "safe_value" else field
                    raise ValueError(f"flag {self.name} is of type {self.type}: it needs a {wire}")
        for field, wire in (("value", "value"), ("safe_value", "safeValue")):
            value = getattr(self, field)
            error = None if value is None else type_error(self.name, wire, self.type, value)
            if error:
                raise ValueError(error)
        return self

    @property
    def wanted(self) -> Any:
        """What the spec asks to serve."""
        return self.enabled if self.type == FlagType.BOOLEAN else self.value

    @property
    def safe(self) -> Any:
        """The value a rollback restores (the validator has filled in a boolean's default)."""
        return False if self.safe_value is None else self.safe_value


class RolloutStrategy(StrEnum):
    RESTART = "Restart"
    NONE = "None"


class Weekday(StrEnum):
    MONDAY = "Monday"
    TUESDAY = "Tuesday"
    WEDNESDAY = "Wednesday"
    THURSDAY = "Thursday"
    FRIDAY = "Friday"
    SATURDAY = "Saturday"
    SUNDAY = "Sunday"


# HH:MM or HH:MM:SS, 24-hour clock.
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"


class ChangeWindow(Model):
    model_config = ConfigDict(
        **Model.model_config,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.start != self.end",
                    "a change window's start and end must differ",
                    messageExpression="'change window ' + self.start + '-' + self.end + ' is empty: start "
                    "and end must differ (an end before the start runs past midnight)'",
                )
            ]
        },
    )

    days: list[Weekday] = Field(
        default_factory=lambda: list(Weekday),
        min_length=1,
        max_length=7,
        description="Days the window opens on, in its time zone (default: every day).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    start: str = Field(pattern=TIME_OF_DAY, description="When it opens: HH:MM or HH:MM:SS, local time.")
    end: str = Field(
        pattern=TIME_OF_DAY,
        description="When it closes: HH:MM or HH:MM:SS, local time; before the start, the next day.",
    )
    time_zone: str = Field(
        default="UTC", max_length=64, pattern=TIME_ZONE, description="IANA time zone, e.g. Europe/Berlin."
    )


class RolloutPolicy(Model):
    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.RESTART,
        description="Restart: rolling-restart the workloads of changed flags. "
        "None: write the ConfigMap only (for apps that reload flags.json themselves).",
    )
    max_parallel: int = Field(
        default=1, ge=1, le=100, description="How many workloads restart at the same time."
    )
    timeout_seconds: int = Field(
        default=600, ge=1, le=86400, description="How long one workload's rollout may take."
    )
    windows: list[ChangeWindow] = Field(
        default_factory=list,
        max_length=16,
        description="When restarts caused by spec edits may start (empty: any time). Outside every window "
        "the ConfigMap is still written and restarts wait; rollbacks never wait.",
    )


class Scenario(StrEnum):
    """The rows of the plan's authority matrix; a request falls in exactly one."""

    SINGLE_FLAG_IN_WINDOW = "SingleFlagInWindow"
    SINGLE_FLAG_LATE = "SingleFlagLate"
    MULTI_FLAG = "MultiFlag"
    EMERGENCY = "Emergency"

    @property
    def needs_approval_by_default(self) -> bool:
        return self in (Scenario.SINGLE_FLAG_LATE, Scenario.MULTI_FLAG)


PRINCIPALS_DESCRIPTION = "users (system:serviceaccount:NS:NAME for a ServiceAccount), or groups as group:NAME"


class ScenarioRule(Model):
    initiators: list[str] = Field(
        default_factory=list,
        max_length=32,
        description=f"Who may create a RollbackRequest in this scenario: {PRINCIPALS_DESCRIPTION}. "
        "Empty: anyone who may create RollbackRequests. Enforced at admission; flagops' own triggers "
        "are always allowed.",
    )
    approvers: list[str] = Field(
        default_factory=list,
        max_length=32,
        description=f"Who may approve in this scenario: {PRINCIPALS_DESCRIPTION}. "
        "Empty: approval.approvers. Enforced at admission.",
    )
    approval_required: bool | None = Field(
        default=None,
        description="Whether a request of this scenario waits for spec.approved. Default: true for "
        "singleFlagLate and multiFlag, false for singleFlagInWindow and emergency.",
    )


class ApprovalRules(Model):
    single_flag_in_window: ScenarioRule | None = Field(
        default=None, description="One flag, within windowSeconds of its last change."
    )
    single_flag_late: ScenarioRule | None = Field(
        default=None, description="One flag, later than windowSeconds after its last change."
    )
    multi_flag: ScenarioRule | None = Field(default=None, description="Several flags, or all: true.")
    emergency: ScenarioRule | None = Field(default=None, description="emergency: true, any flags.")

    def rule(self, scenario: Scenario) -> ScenarioRule:
        found = {
            Scenario.SINGLE_FLAG_IN_WINDOW: self.single_flag_in_window,
            Scenario.SINGLE_FLAG_LATE: self.single_flag_late,
            Scenario.MULTI_FLAG: self.multi_flag,
            Scenario.EMERGENCY: self.emergency,
        }[scenario]
        return found or ScenarioRule()


class ApprovalPolicy(Model):
    window_seconds: int = Field(
        default=3600,
        ge=0,
        le=30 * 86400,
        description="A rollback of one flag within this many seconds of that flag's last change needs "
        "no approval; later ones, and rollbacks of several flags, wait for spec.approved.",
    )
    approvers: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Users, or groups as group:NAME, whose approval counts (enforced at admission), "
        "in every scenario whose rule names no approvers.",
    )
    rules: ApprovalRules = Field(
        default_factory=ApprovalRules,
        description="The authority matrix, per scenario: who may initiate, who may approve, and "
        "whether approval is required.",
    )


class WebhookNotification(Model):
    url_secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the webhook URL (a URL often carries a token: never in a spec)."
    )
    timeout_seconds: int = Field(default=5, ge=1, le=30, description="Timeout of one delivery attempt.")


class EscalationNotification(Model):
    url_secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the escalation receiver's URL (a pager, the tech lead's channel)."
    )
    after_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 86400,
        description="Escalate a rollback that has not succeeded this long after it was requested "
        "(the plan's hour). A Failed rollback escalates at once.",
    )
    timeout_seconds: int = Field(default=5, ge=1, le=30, description="Timeout of one delivery attempt.")


class Notifications(Model):
    webhook: WebhookNotification | None = Field(
        default=None,
        description="POST a JSON message (Slack-compatible text plus fields) on every rollback phase "
        "change and trigger firing.",
    )
    escalation: EscalationNotification | None = Field(
        default=None,
        description="A second receiver that gets one Escalation message per rollback that fails or "
        "has not succeeded within afterSeconds (a page, where webhook is an FYI).",
    )


class FeatureFlagSetSpec(Model):
    flags: list[Flag] = Field(
        default_factory=list,
        max_length=MAX_FLAGS,
        description="The flags, keyed by name.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                cel(
                    "self.all(f, self.exists_one(g, g.name == f.name))",
                    "flag names must be unique within a set: rename or merge the duplicate",
                ),
                cel(
                    "self.all(f, !has(f.requires) || f.requires.all(r, self.exists(g, g.name == r)))",
                    "requires must name flags of this set: add the missing flag or fix the name",
                ),
                cel(
                    "self.all(f, !has(f.requires) || f.requires.all(r, "
                    "self.all(g, g.name != r || !has(g.type) || g.type == 'boolean')))",
                    "requires must name boolean flags: a string, integer, number or object flag "
                    "cannot be a prerequisite",
                ),
            ],
        },
    )
    config_map: ObjectName | None = Field(
        default=None, description="Name of the ConfigMap to write; defaults to the set's name."
    )
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy, description="How workloads are restarted when flags change."
    )
    approval: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy, description="The authority matrix for rollbacks of these flags."
    )
    notifications: Notifications = Field(
        default_factory=Notifications, description="Where rollback news is sent."
    )
    revision_history_limit: int = Field(
        default=10,
        ge=1,
        le=100,
        description="How many revisions of the served values to keep (ControllerRevisions owned by the set).",
    )


class Override(Model):
    flag: FlagName = Field(description="The flag held by a rollback.")
    value: FlagValue = Field(description="The value served while the override holds.")
    held_by: ObjectName = Field(description="The RollbackRequest holding the override.")
    since: datetime.datetime = Field(description="When the override took effect.")


class WorkloadState(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    FAILED = "Failed"
    MISSING = "Missing"
    CONFLICT = "Conflict"


class WorkloadStatus(Model):
    kind: WorkloadKind = Field(description="Kind of the workload.")
    name: str = Field(description="Name of the workload.")
    flags: list[str] = Field(default_factory=list, description="The flags it consumes.")
    flags_hash: str = Field(
        default="", description="sha256 of the effective values of its flags (the pod-template annotation)."
    )
    state: WorkloadState = Field(description="Pending, Progressing, Ready, Failed, Missing or Conflict.")
    message: str = Field(default="", description="Details of the state.")
    restarted_at: datetime.datetime | None = Field(
        default=None, description="When flagops last patched the workload to restart it."
    )
    ready_at: datetime.datetime | None = Field(default=None, description="When that rollout completed.")


class FlagStatus(Model):
    name: str = Field(description="The flag.")
    value: FlagValue = Field(description="The value served now.")
    last_changed_at: datetime.datetime = Field(description="When the served value last changed.")


class ConfigMapStatus(Model):
    name: str = Field(description="Name of the ConfigMap.")
    hash: str = Field(default="", description="sha256 of its data as last written.")


class ApplyTimings(Model):
    started_at: datetime.datetime | None = Field(
        default=None, description="When the last change was picked up."
    )
    config_map_written_at: datetime.datetime | None = Field(
        default=None, description="When the ConfigMap was written."
    )
    rollouts_completed_at: datetime.datetime | None = Field(
        default=None, description="When every restarted workload finished its rollout."
    )
    config_map_seconds: float | None = Field(
        default=None, description="Seconds from pick-up to ConfigMap written."
    )
    rollout_seconds: float | None = Field(
        default=None, description="Seconds from pick-up to rollouts complete."
    )


class TriggerState(StrEnum):
    OK = "OK"
    BREACHING = "Breaching"
    FIRED = "Fired"
    ERROR = "Error"


class TriggerStatus(Model):
    flag: str = Field(description="The flag the trigger watches.")
    name: str = Field(description="The trigger.")
    state: TriggerState = Field(description="OK, Breaching, Fired or Error.")
    since: datetime.datetime | None = Field(default=None, description="When the state began.")
    value: str = Field(default="", description="The value that caused the state.")
    message: str = Field(default="", description="Details.")
    rollback: str = Field(default="", description="The RollbackRequest it created, if it fired.")


class FeatureFlagSetStatus(Model):
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded and Overridden.",
        json_schema_extra=CONDITIONS_EXTRA,
    )
    effective: dict[str, FlagValue] = Field(
        default_factory=dict, description="Flag -> value actually served, after overrides and prerequisites."
    )
    overrides: list[Override] = Field(
        default_factory=list, description="Flags held at their safe value by RollbackRequests."
    )
    config_map: ConfigMapStatus | None = Field(default=None, description="The ConfigMap written.")
    workloads: list[WorkloadStatus] = Field(
        default_factory=list, description="Each consuming workload and its restart."
    )
    flags: list[FlagStatus] = Field(
        default_factory=list, description="Per-flag served value and last change."
    )
    last_apply: ApplyTimings | None = Field(default=None, description="Timings of the last applied change.")
    triggers: list[TriggerStatus] = Field(default_factory=list, description="State of each flag trigger.")
    flag_count: int | None = Field(default=None, description="Number of flags (printer column).")
    enabled_count: int | None = Field(default=None, description="Number of flags served as enabled.")
    revision: int | None = Field(
        default=None, description="The revision of the served values (a ControllerRevision <set>-r<N>)."
    )
    override_count: int | None = Field(default=None, description="Number of flags held by rollbacks.")
