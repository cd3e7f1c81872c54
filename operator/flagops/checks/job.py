"""The `job` check: run a Job (e.g. the smoke tests); it passes when the Job completes."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from flagops import kube
from flagops.reconcile.flagset import MANAGED_BY, owner_reference

LOG_LINES = 10
JOB_GRACE_SECONDS = 10


def job_name(rollback: str, check: str) -> str:
    """<rollback>-<check>, shortened with a hash suffix to fit a label value (63)."""
    name = f"{rollback}-{check}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def job_manifest(
    rollback: dict[str, Any], check: str, template: dict[str, Any], deadline: int
) -> dict[str, Any]:
    meta = rollback["metadata"]
    spec = copy.deepcopy(template)
    # The Job may not outlive the check by more than a grace period; the check's own deadline,
    # measured by flagops, decides first, so a hanging Job always reads as a missed deadline.
    limit = deadline + JOB_GRACE_SECONDS
    spec["activeDeadlineSeconds"] = min(int(spec.get("activeDeadlineSeconds") or limit), limit)
    spec.setdefault("backoffLimit", 0)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], check),
            "namespace": meta["namespace"],
            "labels": {**MANAGED_BY, "flagops.io/rollback": meta["name"][:63], "flagops.io/check": check},
            # Deleting the request deletes its Jobs (and their pods) with it.
            "ownerReferences": [owner_reference("RollbackRequest", meta["name"], meta["uid"])],
        },
        "spec": spec,
    }


async def ensure(client: kube.Kube, manifest: dict[str, Any]) -> None:
    try:
        await client.create(kube.JOBS.path(manifest["metadata"]["namespace"]), manifest)
    except kube.ApiError as err:
        if not err.conflict:  # 409 AlreadyExists: created by an earlier pass
            raise


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond  # type: ignore[no-any-return]
    return None


async def measure(client: kube.Kube, namespace: str, name: str) -> tuple[str, bool | None, str]:
    """(observed, passed, message); passed is None while the Job still runs."""
    job = await client.get(kube.JOBS.path(namespace, name))
    if job is None:
        return "Missing", False, f"Job {name} no longer exists"
    status = job.get("status") or {}
    if _condition(job, "Complete"):
        return "Complete", True, f"Job {name} completed ({status.get('succeeded', 0)} pod(s) succeeded)"
    failed = _condition(job, "Failed")
    if failed:
        logs = await _last_logs(client, namespace, name)
        why = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
        tail = f"; last log lines:\n{logs}" if logs else "; its pods left no log lines"
        return "Failed", False, f"Job {name} failed ({why}){tail}"
    return "Running", None, f"Job {name} running ({status.get('active', 0)} active pod(s))"


async def _last_logs(client: kube.Kube, namespace: str, name: str) -> str:
    pods = await client.list(kube.PODS.path(namespace), label_selector=f"batch.kubernetes.io/job-name={name}")
    if not pods:
        return ""
    newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return (await client.log_tail(namespace, newest["metadata"]["name"], lines=LOG_LINES)).strip()
