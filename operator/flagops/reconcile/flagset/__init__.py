"""Pure decisions for a FeatureFlagSet, one module per concern: served values, the ConfigMap,
which workloads restart, the status.

Nothing here does I/O: every function takes models and observed objects (plain dicts as the
API server returns them) and returns what should be, so the whole policy is unit-tested
without a cluster. flagops.controller.flagsets carries the decisions out.
"""

from flagops.reconcile.flagset.common import (
    FLAGD_JSON,
    FLAGD_SCHEMA,
    FLAGS_JSON,
    HASH_ANNOTATION,
    MANAGED_BY,
    SET_ANNOTATION,
    canonical_json,
    sha256,
)
from flagops.reconcile.flagset.configmap import (
    configmap_data,
    configmap_intact,
    configmap_patch,
    desired_configmap,
    flagd_document,
    left_by_predecessor,
    owned_by,
    owner_reference,
)
from flagops.reconcile.flagset.revisions import Revision, next_revision, revision_name, revision_selector
from flagops.reconcile.flagset.revisions import stored as stored_revisions
from flagops.reconcile.flagset.revisions import to_prune as revisions_to_prune
from flagops.reconcile.flagset.status import (
    apply_timings,
    build_status,
    flag_statuses,
    merge_patch,
    problems,
    set_conditions,
)
from flagops.reconcile.flagset.values import (
    Resolution,
    resolve,
)
from flagops.reconcile.flagset.windows import WindowState, validate_windows, window_state
from flagops.reconcile.flagset.workloads import (
    RestartBudget,
    Rollout,
    WorkloadPlan,
    WorkloadTarget,
    plan_workloads,
    restart_patch,
    rollout_progress,
    template_annotations,
    workload_targets,
)

__all__ = [
    "FLAGD_JSON",
    "FLAGD_SCHEMA",
    "FLAGS_JSON",
    "HASH_ANNOTATION",
    "MANAGED_BY",
    "SET_ANNOTATION",
    "Resolution",
    "RestartBudget",
    "Revision",
    "Rollout",
    "WindowState",
    "WorkloadPlan",
    "WorkloadTarget",
    "apply_timings",
    "build_status",
    "canonical_json",
    "configmap_data",
    "configmap_intact",
    "configmap_patch",
    "desired_configmap",
    "flag_statuses",
    "flagd_document",
    "left_by_predecessor",
    "merge_patch",
    "next_revision",
    "owned_by",
    "owner_reference",
    "plan_workloads",
    "problems",
    "resolve",
    "restart_patch",
    "revision_name",
    "revision_selector",
    "revisions_to_prune",
    "rollout_progress",
    "set_conditions",
    "sha256",
    "stored_revisions",
    "template_annotations",
    "validate_windows",
    "window_state",
    "workload_targets",
]
