"""The only module that talks to the Kubernetes API server (kopf's own watches aside).

A small async client on aiohttp (kopf's own HTTP stack): JSON in, JSON out, typed errors,
bounded timeouts, and retries with backoff for what is worth retrying (connection errors,
429 and 5xx). Credentials come from the kubeconfig or the in-cluster ServiceAccount, loaded
by the `kubernetes` package's loaders, which also refresh rotated tokens.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from flagops import metrics

logger = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
_RETRY_DELAYS: Final = (0.2, 0.5, 1.0, 2.0, 4.0)
FIELD_MANAGER: Final = "flagops"

Body = dict[str, Any]


# flagops uses a Secret only when the Secret carries this label.
SECRET_OPT_IN: Final = ("flagops.io/usable", "true")


class SecretNotUsable(Exception):
    """A referenced Secret cannot be used; the message names it and says why (never its data)."""


class ApiError(Exception):
    """A non-2xx answer. `status` is the HTTP code, `reason` the Status reason (e.g. Conflict)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


def resource_of(path: str) -> str:
    """The resource a REST path names ("configmaps", "featureflagsets/status"), for metrics."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:] or ["namespaces"]
    if not parts:
        return "other"
    return f"{parts[0]}/{parts[2]}" if len(parts) > 2 else parts[0]


def newer(version: str, than: str) -> bool:
    """Whether resourceVersion `version` is later than `than`. They are etcd revisions, compared
    as numbers (as the API server's watch cache does); anything else counts as newer."""
    try:
        return int(version) > int(than)
    except ValueError:
        return True


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)

    def paths(self, namespaces: Sequence[str]) -> list[str]:
        """The collections to list or watch: one per namespace, or the cluster-wide one."""
        return [self.path(ns) for ns in namespaces] or [self.path()]


CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
EVENTS = Resource("events.k8s.io", "v1", "events")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
STATEFULSETS = Resource("apps", "v1", "statefulsets")
DAEMONSETS = Resource("apps", "v1", "daemonsets")
CONTROLLER_REVISIONS = Resource("apps", "v1", "controllerrevisions")
JOBS = Resource("batch", "v1", "jobs")
FLAGSETS = Resource("flagops.io", "v1alpha1", "featureflagsets")
ROLLBACKS = Resource("flagops.io", "v1alpha1", "rollbackrequests")
DRILLS = Resource("flagops.io", "v1alpha1", "rollbackdrills")
CHECK_TEMPLATES = Resource("flagops.io", "v1alpha1", "checktemplates")
CLUSTER_CHECK_TEMPLATES = Resource("flagops.io", "v1alpha1", "clusterchecktemplates")
PODS = Resource("", "v1", "pods")
WORKLOADS: Final = {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS, "DaemonSet": DAEMONSETS}


@dataclass(frozen=True)
class Identity:
    """Who the requests are sent as: the credentials' own user, or one they impersonate
    (kubectl's --as and --as-group), and the field manager their writes are recorded under."""

    impersonate: str | None = None
    groups: tuple[str, ...] = ()
    field_manager: str = FIELD_MANAGER


class Kube:
    """One aiohttp session against one API server. Create with `Kube.connect()`."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | bool,
        configuration: k8s_client.Configuration,
        *,
        timeout: float = 30.0,
        identity: Identity | None = None,
        namespace: str = "default",
    ) -> None:
        self._server = server.rstrip("/")
        self._configuration = configuration
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._identity = identity or Identity()
        self.namespace = namespace

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        *,
        timeout: float = 30.0,
        context: str | None = None,
        identity: Identity | None = None,
    ) -> Kube:
        """From an explicit kubeconfig, else $KUBECONFIG/~/.kube/config, else in-cluster.

        `namespace` becomes the context's namespace (or the ServiceAccount's in a pod)."""
        configuration = k8s_client.Configuration()
        namespace = "default"
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts if c["name"] == context), active) if context else active
            namespace = (chosen or {}).get("context", {}).get("namespace") or namespace
        except k8s_config.ConfigException:
            if kubeconfig or context:
                raise
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            try:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    namespace = f.read().strip() or namespace
            except OSError:
                pass
        ssl_context: ssl.SSLContext | bool
        if configuration.verify_ssl:
            ssl_context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        else:
            ssl_context = False
        if configuration.cert_file and isinstance(ssl_context, ssl.SSLContext):
            ssl_context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return cls(
            str(configuration.host),
            ssl_context,
            configuration,
            timeout=timeout,
            identity=identity,
            namespace=namespace,
        )

    @property
    def server_address(self) -> tuple[str, int]:
        """(host, port) of the API server."""
        parts = urllib.parse.urlsplit(self._server)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None) -> list[tuple[str, str]]:
        """As pairs: Impersonate-Group repeats, once per group."""
        headers = [("Accept", "application/json")]
        if content_type:
            headers.append(("Content-Type", content_type))
        token = self._configuration.get_api_key_with_prefix("BearerToken")
        if token:
            headers.append(("Authorization", token))
        if self._identity.impersonate:
            headers.append(("Impersonate-User", self._identity.impersonate))
            headers.extend(("Impersonate-Group", group) for group in self._identity.groups)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> Any:
        """Send one request, retrying transient failures; raises ApiError for the rest."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
            )
        url = self._server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        for attempt, delay in enumerate((*_RETRY_DELAYS, None)):
            metrics.API_REQUESTS.labels(method, resource_of(path)).inc()
            try:
                async with self._session.request(
                    method, url, json=body, headers=self._headers(content_type if body is not None else None)
                ) as resp:
                    if resp.status < 300:
                        return await resp.json(content_type=None) if resp.content_length != 0 else None
                    payload = await resp.json(content_type=None) if resp.content_type.endswith("json") else {}
                    error = ApiError(
                        resp.status,
                        str(payload.get("reason") or resp.reason or ""),
                        str(payload.get("message") or await resp.text()),
                    )
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if delay is None:
                    raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
                logger.debug("retrying %s %s after %r (attempt %d)", method, path, exc, attempt + 1)
                await asyncio.sleep(delay)
                continue
            if error.status == 429 or error.status >= 500:
                if delay is None:
                    raise error
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                await asyncio.sleep(min(wait, 10.0))
                continue
            raise error
        raise AssertionError("unreachable")

    # -- verbs -------------------------------------------------------------------------

    async def get(self, path: str) -> Body | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)  # type: ignore[no-any-return]
        except ApiError as err:
            if err.not_found:
                return None
            raise

    async def list(self, path: str, *, label_selector: str | None = None) -> list[Body]:
        return (await self.list_versioned(path, label_selector=label_selector))[0]

    async def list_versioned(
        self, path: str, *, label_selector: str | None = None, field_selector: str | None = None
    ) -> tuple[builtins.list[Body], str]:
        """The items and the list's resourceVersion, to watch from."""
        params = {
            key: value
            for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector))
            if value
        }
        answer = await self.request("GET", path, params=params)
        return list(answer.get("items", [])), str(answer.get("metadata", {}).get("resourceVersion", ""))

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Body]]:
        """(type, object) events of a server-side filtered watch, until the server ends it.
        Raises ApiError (410 Gone: the version is too old; list again)."""
        if self._session is None:
            await self.request("GET", "/version")
        assert self._session is not None
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        url = self._server + path + "?" + urllib.parse.urlencode(params)
        metrics.API_REQUESTS.labels("WATCH", resource_of(path)).inc()
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=timeout_seconds + 30)
        try:
            async with self._session.get(url, headers=self._headers(None), timeout=timeout) as resp:
                if resp.status >= 300:
                    raise ApiError(resp.status, resp.reason or "", await resp.text())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(int(status.get("code") or 500), str(status.get("reason")), str(status))
                    yield str(event.get("type")), event.get("object") or {}
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ApiError(0, "Unreachable", f"watch {path}: {exc!r}") from exc

    async def create(self, path: str, body: Body) -> Body:
        params = {"fieldManager": self._identity.field_manager}
        return await self.request("POST", path, body=body, params=params)  # type: ignore[no-any-return]

    async def patch(self, path: str, patch: Any, *, content_type: str = MERGE_PATCH) -> Body:
        """A JSON merge patch (or, with JSON_PATCH, a list of operations)."""
        return await self.request(  # type: ignore[no-any-return]
            "PATCH",
            path,
            body=patch,
            params={"fieldManager": self._identity.field_manager},
            content_type=content_type,
        )

    async def delete(self, path: str) -> None:
        """Delete in the background (dependents are garbage-collected); gone already is fine."""
        try:
            await self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as err:
            if not err.not_found:
                raise

    async def patch_status(self, resource: Resource, body: Body, patch: Mapping[str, Any]) -> Body:
        """The one way flagops writes a status: a merge patch of the status subresource, guarded by
        the resourceVersion it was computed from (a concurrent writer gets a 409 and retries)."""
        meta = body["metadata"]
        return await self.patch(
            resource.path(meta["namespace"], meta["name"], "status"),
            {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch},
        )

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret that opted in to flagops (SECRET_OPT_IN); SecretNotUsable otherwise.

        Whoever writes a reference to a Secret into a check, a trigger or a webhook makes
        flagops send its value somewhere: only the Secret's owner may allow that.
        """
        where = f"Secret {namespace}/{name}"
        try:
            secret = await self.get(SECRETS.path(namespace, name))
        except ApiError as err:
            if err.status != 403:
                raise
            raise SecretNotUsable(f"{where}: flagops may not read it ({err.reason})") from err
        if secret is None:
            raise SecretNotUsable(f"{where} not found")
        label, value = SECRET_OPT_IN
        if (secret["metadata"].get("labels") or {}).get(label) != value:
            raise SecretNotUsable(
                f"{where} has not opted in to use by flagops: its owner adds the label {label}={value} "
                "to allow it"
            )
        encoded = (secret.get("data") or {}).get(key)
        if not encoded:
            raise SecretNotUsable(f"{where} has no key {key}")
        return base64.b64decode(encoded).decode()

    async def events_about(self, namespace: str, kind: str, name: str) -> builtins.list[Body]:
        """The Events regarding one object; none when they cannot be read (they are a courtesy,
        not the record, and the API server keeps them about an hour)."""
        selector = f"regarding.kind={kind},regarding.name={name}"
        try:
            items, _ = await self.list_versioned(EVENTS.path(namespace), field_selector=selector)
        except ApiError:
            return []
        return items

    async def whoami(self) -> Body:
        """The caller as the API server authenticates it (a SelfSubjectReview's userInfo)."""
        review = await self.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return dict(review.get("status", {}).get("userInfo", {}))

    async def log_tail(self, namespace: str, pod: str, *, lines: int = 20) -> str:
        """The last lines a pod's container wrote ('' when it has none)."""
        try:
            resp = await self.request_text(PODS.path(namespace, pod, "log"), params={"tailLines": str(lines)})
        except ApiError:
            return ""
        return resp

    async def request_text(self, path: str, *, params: Mapping[str, str] | None = None) -> str:
        if self._session is None:
            await self.request("GET", "/version")
        assert self._session is not None
        url = self._server + path + ("?" + urllib.parse.urlencode(params) if params else "")
        async with self._session.get(url, headers=self._headers(None)) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(resp.status, resp.reason or "", text)
            return text
