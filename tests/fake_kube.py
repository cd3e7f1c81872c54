"""An in-memory API server for reconciler unit tests (as controller-runtime's pkg/client/fake).

It speaks the subset of flagops.kube.Kube the reconcilers use, with the semantics that
matter to them: resourceVersions, 409 on a stale write, merge patches, the status
subresource, generations, 404s. `crash_after(n)` makes the n-th next write fail after it
was stored, as a process killed between two writes would; `complete_rollouts` makes the
workload controllers finish a rollout the moment its template changes.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from flagops import kube

Body = dict[str, Any]


class Crash(Exception):
    """The process 'died' right after a write reached the API server."""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def parse(path: str) -> tuple[str, str | None, str | None, str | None]:
    """(plural, namespace, name, subresource) of a REST path."""
    parts = path.strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]
    namespace = None
    if parts and parts[0] == "namespaces" and len(parts) > 2:
        namespace, parts = parts[1], parts[2:]
    plural = parts[0]
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    return plural, namespace, name, sub


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], Body] = {}
        self.writes: list[tuple[str, str, Body]] = []  # (verb, path, body) of every write
        self.reads: list[tuple[str, str]] = []  # (GET or LIST, path) of every read
        self.complete_rollouts = True
        self._versions = itertools.count(1)
        self._crash_in: int | None = None

    # -- test controls ---------------------------------------------------------------------

    def crash_after(self, writes: int) -> None:
        self._crash_in = writes

    def put(self, plural: str, obj: Body) -> Body:
        """Create an object directly, as another client would."""
        meta = obj["metadata"]
        return self._store(plural, meta.get("namespace"), meta["name"], copy.deepcopy(obj), new=True)

    def obj(self, plural: str, namespace: str | None, name: str) -> Body | None:
        return self.objects.get((plural, namespace, name))

    def patches_of(self, plural: str, name: str) -> list[Body]:
        return [b for verb, path, b in self.writes if verb == "PATCH" and parse(path)[0::2] == (plural, name)]

    # -- what the reconcilers call --------------------------------------------------------------

    @property
    def server_address(self) -> tuple[str, int]:
        return "127.0.0.1", 6443

    async def get(self, path: str) -> Body | None:
        self.reads.append(("GET", path))
        plural, namespace, name, _ = parse(path)
        found = self.objects.get((plural, namespace, name or ""))
        return copy.deepcopy(found) if found else None

    async def list(self, path: str, *, label_selector: str | None = None) -> list[Body]:
        return (await self.list_versioned(path, label_selector=label_selector))[0]

    async def list_versioned(self, path: str, *, label_selector: str | None = None) -> tuple[list[Body], str]:
        self.reads.append(("LIST", path))
        plural, namespace, _, _ = parse(path)
        wanted = dict(kv.split("=", 1) for kv in label_selector.split(",")) if label_selector else {}
        items = [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items(), key=lambda item: str(item[0]))
            if p == plural
            and (namespace is None or ns == namespace)
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return items, str(next(self._versions))

    async def create(self, path: str, body: Body) -> Body:
        plural, namespace, _, _ = parse(path)
        name = body["metadata"]["name"]
        if (plural, namespace, name) in self.objects:
            raise kube.ApiError(409, "AlreadyExists", f"{plural} {name} already exists")
        return self._write(
            "POST", path, body, lambda: self._store(plural, namespace, name, copy.deepcopy(body), new=True)
        )

    async def patch(self, path: str, patch: Any) -> Body:
        plural, namespace, name, sub = parse(path)
        current = self.objects.get((plural, namespace, name or ""))
        if current is None:
            raise kube.ApiError(404, "NotFound", f"{plural} {name} not found")
        wanted_version = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_version is not None and wanted_version != current["metadata"]["resourceVersion"]:
            raise kube.ApiError(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            )

        def apply() -> Body:
            updated = merge(current, {k: v for k, v in patch.items() if k != "metadata" or sub is None})
            if sub == "status":
                updated = {**current, "status": updated.get("status")}
            elif plural in ("featureflagsets", "rollbackrequests", "rollbackdrills"):
                updated["status"] = current.get("status")  # the status subresource keeps it
            if isinstance(patch.get("metadata"), dict) and sub is None:
                meta = {k: v for k, v in patch["metadata"].items() if k != "resourceVersion"}
                updated["metadata"] = merge(current["metadata"], meta)
            return self._store(plural, namespace, name or "", updated, new=False, before=current)

        return self._write("PATCH", path, patch, apply)

    async def request(self, method: str, path: str, *, body: Body | None = None, **_: Any) -> Body:
        """PUT only (the Leases): a replace guarded by the resourceVersion it carries."""
        assert method == "PUT" and body is not None, f"the fake API has no raw {method}"
        plural, namespace, name, _ = parse(path)
        current = self.objects.get((plural, namespace, name or ""))
        if current is None:
            raise kube.ApiError(404, "NotFound", f"{plural} {name} not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise kube.ApiError(409, "Conflict", "the object has been modified")
        return self._write(
            "PUT",
            path,
            body,
            lambda: self._store(
                plural, namespace, name or "", copy.deepcopy(body), new=False, before=current
            ),
        )

    async def delete(self, path: str) -> None:
        plural, namespace, name, _ = parse(path)
        self.objects.pop((plural, namespace, name or ""), None)
        self.writes.append(("DELETE", path, {}))

    async def patch_status(self, resource: kube.Resource, body: Body, patch: Mapping[str, Any]) -> Body:
        meta = body["metadata"]
        return await self.patch(
            resource.path(meta["namespace"], meta["name"], "status"),
            {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch},
        )

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        raise kube.SecretNotUsable(f"Secret {namespace}/{name}: the fake API has no Secrets")

    async def log_tail(self, namespace: str, pod: str, *, lines: int = 20) -> str:
        return ""

    async def close(self) -> None:
        pass

    # -- internals ---------------------------------------------------------------------------

    def _write(self, verb: str, path: str, body: Body, apply: Any) -> Body:
        result: Body = apply()
        self.writes.append((verb, path, copy.deepcopy(body)))
        if self._crash_in is not None:
            self._crash_in -= 1
            if self._crash_in <= 0:
                self._crash_in = None
                raise Crash(f"crashed after {verb} {path}")
        return copy.deepcopy(result)

    def _store(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        obj: Body,
        *,
        new: bool,
        before: Mapping[str, Any] | None = None,
    ) -> Body:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        if new:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault(
                "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            meta["generation"] = 1
        elif before is not None and obj.get("spec") != before.get("spec"):
            meta["generation"] = int(before["metadata"].get("generation", 1)) + 1
        if self.complete_rollouts and plural == "deployments":
            replicas = obj.get("spec", {}).get("replicas", 1)
            obj["status"] = {
                "observedGeneration": meta["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
        self.objects[(plural, namespace, name)] = obj
        return obj
