"""The ConfigMap a set is served from, and whose it is."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flagops.models.common import API_VERSION
from flagops.models.common import GROUP as API_GROUP
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

# -- the ConfigMap -------------------------------------------------------------------------


def env_value(value: Any) -> str:
    """A served value as an environment variable: booleans and numbers as JSON, strings as
    they are, objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return canonical_json(value)
    return json.dumps(value)


def flagd_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenFeature flagd flag-definition format: a boolean flag with on/off variants, a flag
    of another type with its served value as the default variant."""
    flags: dict[str, Any] = {}
    for name, value in sorted(values.items()):
        if isinstance(value, bool):
            flags[name] = {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "on" if value else "off",
            }
        else:
            flags[name] = {"state": "ENABLED", "variants": {"served": value}, "defaultVariant": "served"}
    return {"$schema": FLAGD_SCHEMA, "flags": flags}


def configmap_data(values: Mapping[str, Any]) -> dict[str, str]:
    data = {name: env_value(value) for name, value in sorted(values.items())}
    data[FLAGS_JSON] = json.dumps(dict(sorted(values.items())), indent=2, sort_keys=True) + "\n"
    data[FLAGD_JSON] = json.dumps(flagd_document(values), indent=2) + "\n"
    return data


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True}


def desired_configmap(
    namespace: str, set_name: str, set_uid: str, cm_name: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    data = configmap_data(values)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": cm_name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, SET_ANNOTATION: set_name},
            "annotations": {HASH_ANNOTATION: sha256(data)},
            "ownerReferences": [owner_reference("FeatureFlagSet", set_name, set_uid)],
        },
        "data": data,
    }


def configmap_intact(obj: Mapping[str, Any]) -> bool:
    """Whether a ConfigMap's data is still what flagops wrote (its hash annotation says what)."""
    written = (obj.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    return written == sha256(obj.get("data") or {})


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def left_by_predecessor(obj: Mapping[str, Any], set_name: str) -> bool:
    """A ConfigMap flagops wrote for an earlier set of this name (deleted and re-applied, as a
    GitOps prune and re-sync does; or orphaned by its deletion): this set's to adopt, not a
    stranger's. Names are unique in a namespace, so an owner of this name and another uid no
    longer exists."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in MANAGED_BY.items()) or labels.get(SET_ANNOTATION) != set_name:
        return False
    refs = meta.get("ownerReferences") or []
    return all(
        ref.get("kind") == "FeatureFlagSet"
        and str(ref.get("apiVersion", "")).startswith(f"{API_GROUP}/")
        and ref.get("name") == set_name
        for ref in refs
    )


def configmap_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch taking `existing` to `desired` in what flagops owns, or None if equal."""
    patch: dict[str, Any] = {}
    old_data = existing.get("data") or {}
    data_patch: dict[str, Any] = {k: v for k, v in desired["data"].items() if old_data.get(k) != v}
    data_patch.update({k: None for k in old_data if k not in desired["data"]})
    if data_patch:
        patch["data"] = data_patch
    meta: dict[str, Any] = {}
    for part in ("labels", "annotations"):
        have = existing.get("metadata", {}).get(part) or {}
        wanted = desired["metadata"][part]
        changed = {k: v for k, v in wanted.items() if have.get(k) != v}
        if changed:
            meta[part] = changed
    refs = desired["metadata"]["ownerReferences"]
    if (existing.get("metadata", {}).get("ownerReferences") or []) != refs:
        meta["ownerReferences"] = refs  # adoption: a merge patch replaces the whole list
    if meta:
        patch["metadata"] = meta
    return patch or None
