"""Thin kopf handlers: every watch event becomes a key on the controller's queue.

No decision is made here. Handlers are registered on an explicit registry (not kopf's
global one), so tests and the CLI build an operator without import side effects.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import kopf

from flagops.controller.runtime import Controller, Key
from flagops.models.common import GROUP, VERSION
from flagops.reconcile.flagset import SET_ANNOTATION
from flagops.reconcile.locks import held_annotation

PREFIX = GROUP


def settings(*, namespaced: bool) -> kopf.OperatorSettings:
    """kopf settings chosen on purpose; see the comments."""
    s = kopf.OperatorSettings()
    # Progress and the diff base live in annotations under our prefix, never in status:
    # the status schema is strict, and Argo CD ignores annotations it does not manage.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Only event handlers are registered, so kopf adds no finalizer; name ours anyway.
    s.persistence.finalizer = f"{PREFIX}/finalizer"
    # Watches end server-side every 10 minutes and are re-established; a stalled
    # connection is noticed by kopf's bookmark-based inactivity timeout (70 s).
    s.watching.server_timeout = 600
    s.watching.client_timeout = 660
    s.watching.connect_timeout = 10
    s.networking.request_timeout = 60
    # flagops posts its own Events (with reasons a user can act on); kopf's would
    # repeat log lines, which may carry details not meant for Events.
    s.posting.enabled = False
    # In namespaced mode, do not list namespaces or CRDs cluster-wide (no RBAC for it).
    s.scanning.disabled = namespaced
    return s


def _template_set(body: kopf.Body) -> str | None:
    annotations = body.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(SET_ANNOTATION)
    return value if isinstance(value, str) else None


def _has_triggers(spec: Any) -> bool:
    flags = spec.get("flags") if isinstance(spec, dict) else None
    if not isinstance(flags, list):
        return False
    return any(isinstance(flag, dict) and flag.get("triggers") for flag in flags)


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = kopf.login_with_kubeconfig(**kwargs)
        if info is not None:
            return info
        info = kopf.login_with_service_account(**kwargs)
        # kopf names https://kubernetes.default.svc; kube.py, like client-go, the address the
        # kubelet puts in the environment, which is all a pod without cluster DNS can reach.
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if info is not None and host and port:
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            info = dataclasses.replace(info, server=server)
        return info

    @kopf.on.cleanup(registry=registry)
    async def stop_workers(**_: Any) -> None:
        # kopf waits for every task of the loop before it returns: stop ours first.
        await controller.stop()

    # Every handler is a coroutine: kopf runs a plain function in a thread pool, and these touch
    # the controller's queue and indexes, which belong to the event loop (and a thread hop per
    # event costs more than the handler itself).
    @kopf.on.event(GROUP, VERSION, "featureflagsets", registry=registry)
    async def flagset_event(
        *, type: str, name: str, namespace: str | None, body: kopf.Body, **_: Any
    ) -> None:
        if namespace is None:
            return
        key, triggers = Key("FeatureFlagSet", namespace, name), Key("Triggers", namespace, name)
        controller.track(key, deleted=type == "DELETED")
        controller.track(triggers, deleted=type == "DELETED" or not _has_triggers(body.get("spec")))
        if type == "DELETED":
            controller.workloads.remove(namespace, name)
            controller.flagsets.forget(namespace, name)
            return
        controller.workloads.update(namespace, name, body.get("spec"))
        if controller.owns(namespace):
            controller.flagsets.observe(body)
        controller.enqueue(key)
        if _has_triggers(body.get("spec")):
            # Evaluated on its own timer; an event only makes sure the timer runs.
            controller.ensure(triggers)

    @kopf.on.event(GROUP, VERSION, "rollbackrequests", registry=registry)
    async def rollback_event(
        *, type: str, name: str, namespace: str | None, body: kopf.Body, **_: Any
    ) -> None:
        if namespace is None:
            return
        spec = body.get("spec") or {}
        flag_set = spec.get("flagSet")
        controller.track(Key("RollbackRequest", namespace, name), deleted=type == "DELETED")
        if type == "DELETED":
            before = controller.rollback_index.remove(namespace, name)
            controller.rollbacks.forget(namespace, name)
        else:
            before = controller.rollback_index.upsert(dict(body))
            if controller.owns(namespace):
                controller.rollbacks.observe(dict(body))
            controller.enqueue(Key("RollbackRequest", namespace, name))
        for owner in body.get("metadata", {}).get("ownerReferences") or []:
            if owner.get("kind") == "RollbackDrill" and owner.get("name"):
                controller.enqueue(Key("RollbackDrill", namespace, owner["name"]))  # its outcome
        lock_changed = type == "DELETED" or before is None or held_annotation(before) != held_annotation(body)
        if isinstance(flag_set, str) and lock_changed:
            # The set's overrides come from its requests' locks: a lock taken, lifted or gone.
            controller.enqueue(Key("FeatureFlagSet", namespace, flag_set))

    @kopf.on.event(GROUP, VERSION, "rollbackdrills", registry=registry)
    async def drill_event(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
        if namespace is None:
            return
        controller.track(Key("RollbackDrill", namespace, name), deleted=type == "DELETED")
        if type != "DELETED":
            controller.enqueue(Key("RollbackDrill", namespace, name))

    _register_workloads(registry, controller)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _register_workloads(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """A workload's events wake the sets that consume it and the rollbacks waiting on it."""
    for kind, plural in (
        ("Deployment", "deployments"),
        ("StatefulSet", "statefulsets"),
        ("DaemonSet", "daemonsets"),
    ):

        async def workload_event(
            *, name: str, namespace: str | None, body: kopf.Body, _kind: str = kind, **_: Any
        ) -> None:
            if namespace is None:
                return
            sets = set(controller.workloads.sets_for(namespace, _kind, name))
            claimed = _template_set(body)
            if claimed:
                sets.add(claimed)
            for set_name in sets:
                controller.enqueue(Key("FeatureFlagSet", namespace, set_name))
            for rollback in controller.rollbacks.waiting.get((namespace, _kind, name), ()):
                controller.enqueue(Key("RollbackRequest", namespace, rollback))

        kopf.on.event("apps", "v1", plural, registry=registry, id=f"{plural}-event")(workload_event)
