"""flagops benchmarks, on the local control plane (a fresh one per run).

    python benchmarks/run.py latency     flag edited -> ConfigMap updated -> restart patched (200 edits),
                                         with maxParallel 1 and 4
    python benchmarks/run.py overhead    a RollbackRequest vs the same steps as a kubectl script, 15
                                         rounds alternating: one flag, and the Epic 21 emergency shape
    python benchmarks/run.py scale       sets of 20 flags (100 to 10,000): start to all Ready, peak RSS,
                                         API requests; 100 concurrent RollbackRequests
    python benchmarks/run.py shards      9,000 sets in 90 namespaces: 1 replica, then 3 with --shards 3
    python benchmarks/run.py takeover    the holder of a shard SIGKILLed: until another holds it and
                                         serves an edit made at the kill (3 rounds)
    python benchmarks/run.py budget      a flag turned on in 200 sets at once, each read by its own
                                         Deployment: peak concurrent rollouts and time to all rolled
                                         out, with --max-concurrent-restarts 20 and with no limit
    python benchmarks/run.py all         all of them (make bench); --quick: smaller sizes, no budget,
                                         a smoke run of a few minutes (make bench-quick)

These are measurements, not tests: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch

from flagops.models.flagset import WorkloadKind
from flagops.reconcile.flagset import HASH_ANNOTATION, rollout_progress, template_annotations
from flagops_dev import devcluster

ROOT = Path(__file__).resolve().parents[1]
API = ("flagops.io", "v1alpha1")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
    }


@contextmanager
def environment(workdir: Path) -> Iterator[tuple[devcluster.ControlPlane, Path]]:
    binaries = devcluster.build_binaries(quiet=True)
    os.environ["PATH"] = f"{binaries['kubectl'].parent}{os.pathsep}{os.environ['PATH']}"
    plane = devcluster.ControlPlane(workdir / "cluster")
    plane.start(bound_to_caller=True, binaries=binaries)
    try:
        kubectl(plane.kubeconfig, "apply", "-f", str(ROOT / "crds"))
        kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield plane, plane.kubeconfig
    finally:
        plane.stop()


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    ).stdout


class Operator:
    def __init__(
        self, kubeconfig: Path, log: Path, *args: str, profile: Path | None = None, memprobe: bool = False
    ) -> None:
        self.port = devcluster.free_port()
        self.log = log.open("ab")
        # pyinstrument samples the operator's stacks (wall time, every 5 ms) and writes the
        # profile as text when the operator exits.
        profiler = ["-m", "pyinstrument", "-i", "0.005", "-r", "text", "-o", str(profile)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *(profiler if profile else []),
                *([str(ROOT / "benchmarks" / "memprobe.py")] if memprobe else ["-m", "flagops.cli"]),
                "run",
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                str(self.port),
                "--allowed-targets=127.0.0.0/8",  # the checks' endpoints listen on loopback
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            preexec_fn=devcluster.die_with_parent,  # noqa: PLW1509
        )

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metric_sum(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    def requests_by_kind(self) -> dict[str, int]:
        """flagops_api_requests_total by "METHOD resource", largest first."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("flagops_api_requests_total{"):
                labels = dict(
                    part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
                )
                key = f"{labels['method'].strip(chr(34))} {labels['resource'].strip(chr(34))}"
                counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def wait(what: str, probe: Callable[[], bool], timeout: float = 300, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)


def deployment(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def flagset(
    name: str, flags: int, workloads: dict[int, str] | None = None, enabled: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": name},
        "spec": {
            "flags": [
                {
                    "name": f"FLAG_{i}",
                    "enabled": enabled,
                    "workloads": [{"name": workloads[i]}] if workloads and i in workloads else [],
                }
                for i in range(flags)
            ]
        },
    }


class Watcher:
    """Timestamps, by a watch, when an object first shows a wanted state."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str) -> None:
        self.latest: dict[str, Any] = {}
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(list_fn, namespace), daemon=True)
        self._thread.start()

    def _run(self, list_fn: Callable[..., Any], namespace: str) -> None:
        with contextlib.suppress(urllib3.exceptions.HTTPError):  # the control plane stopped
            for event in watch.Watch().stream(list_fn, namespace, timeout_seconds=3600):
                obj = event["object"]
                with self.changed:
                    self.latest[obj.metadata.name] = obj
                    self.changed.notify_all()

    def until(self, name: str, predicate: Callable[[Any], bool], timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                obj = self.latest.get(name)
                if obj is not None and predicate(obj):
                    return time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(name)
                self.changed.wait(left)


def bench_latency(workdir: Path, edits: int = 200, max_parallel: int = 1) -> dict[str, Any]:
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        for i in range(4):
            apps.create_namespaced_deployment(ns, deployment(f"app-{i}"))
        spec = flagset("bench", 20, {i: f"app-{i % 4}" for i in range(20)})
        spec["spec"]["rollout"] = {"maxParallel": max_parallel}
        custom.create_namespaced_custom_object(*API, ns, "featureflagsets", spec)
        op = Operator(kubeconfig, workdir / "operator.log")
        try:
            cms, deploys = (
                Watcher(core.list_namespaced_config_map, ns),
                Watcher(apps.list_namespaced_deployment, ns),
            )
            cms.until("bench", lambda cm: cm.data is not None, timeout=60)
            to_cm, to_restart = [], []

            def template_hash(d: Any) -> str | None:
                return (d.spec.template.metadata.annotations or {}).get("flagops.io/flags-hash")

            for i in range(4):
                deploys.until(f"app-{i}", lambda d: template_hash(d) is not None, timeout=60)
            for edit in range(edits):
                flag, value = edit % 20, (edit // 20) % 2 == 0
                target = f"app-{flag % 4}"
                before = template_hash(deploys.latest[target])
                start = time.monotonic()
                spec["spec"]["flags"][flag]["enabled"] = value
                custom.patch_namespaced_custom_object(
                    *API,
                    ns,
                    "featureflagsets",
                    "bench",
                    {"spec": {"flags": spec["spec"]["flags"]}},
                    _content_type="application/merge-patch+json",
                )
                want = "true" if value else "false"
                t_cm = cms.until("bench", lambda cm, f=flag, w=want: cm.data.get(f"FLAG_{f}") == w)
                t_restart = deploys.until(target, lambda d, b=before: template_hash(d) != b)
                to_cm.append(t_cm - start)
                to_restart.append(t_restart - start)
            return {
                "edits": edits,
                "max_parallel": max_parallel,
                "to_configmap_s": summary(to_cm),
                "to_restart_patched_s": summary(to_restart),
            }
        finally:
            op.stop()
            api.close()


def bench_overhead(
    workdir: Path, rounds: int = 15, workloads: int = 1, profile: Path | None = None
) -> dict[str, Any]:
    """A RollbackRequest against the same steps as a kubectl script, alternating, on identical
    Deployments. workloads=1: one flag, one Deployment, one http check. workloads=3: the Epic 21
    emergency shape: every flag of the set (two per Deployment), three Deployments, a check each.
    Both sides end on the same observable state: the new pods Ready and every check answered."""
    endpoint_server = _healthz_server()
    url = f"http://127.0.0.1:{endpoint_server.server_address[1]}/healthz"
    apps_ = [f"app-{i}" for i in range(workloads)]
    flags = 2 * workloads
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        for name in apps_:
            apps.create_namespaced_deployment(ns, deployment(name))
            apps.create_namespaced_deployment(ns, deployment(f"{name}-sh"))
        on = {f"FLAG_{i}": "true" for i in range(flags)}
        core.create_namespaced_config_map(ns, {"metadata": {"name": "sh-flags"}, "data": on})
        custom.create_namespaced_custom_object(
            *API,
            ns,
            "featureflagsets",
            flagset("bench", flags, {i: apps_[i // 2] for i in range(flags)}, True),
        )
        op = Operator(kubeconfig, workdir / "operator.log", profile=profile)
        off = json.dumps({"data": dict.fromkeys(on, "false")})
        deployments = " ".join(f"deployment/{name}-sh" for name in apps_)
        # As a person would type it: one patch, one restart of all, a status per Deployment, the
        # checks one after the other. `date` stamps each step (bash's EPOCHREALTIME).
        script = "set -e\n" + "\n".join(
            [
                "echo start $EPOCHREALTIME",
                f"kubectl -n {ns} patch configmap sh-flags -p '{off}' >/dev/null",
                "echo patched $EPOCHREALTIME",
                f"kubectl -n {ns} rollout restart {deployments} >/dev/null",
                "echo restarted $EPOCHREALTIME",
                *(
                    f"kubectl -n {ns} rollout status deployment/{n}-sh --timeout=120s >/dev/null"
                    for n in apps_
                ),
                "echo rolled-out $EPOCHREALTIME",
                *(f"curl -sf {url} >/dev/null" for _ in apps_),
                "echo checked $EPOCHREALTIME",
            ]
        )
        flagops_s: list[float] = []
        script_s: list[float] = []
        script_steps: list[dict[str, float]] = []

        def settled() -> None:
            kubectl(kubeconfig, "-n", ns, "wait", "ffs/bench", "--for=condition=Ready", "--timeout=60s")
            for name in apps_:
                for deployed in (name, f"{name}-sh"):
                    kubectl(
                        kubeconfig, "-n", ns, "rollout", "status", f"deployment/{deployed}", "--timeout=60s"
                    )

        try:
            settled()  # both sides start from Deployments whose first rollout has finished
            for round_ in range(rounds):
                name = f"rb-{round_}"
                body = {
                    "apiVersion": "flagops.io/v1alpha1",
                    "kind": "RollbackRequest",
                    "metadata": {"name": name},
                    "spec": {
                        "flagSet": "bench",
                        **({"flags": ["FLAG_0"]} if workloads == 1 else {"all": True}),
                        "emergency": True,
                        "checks": [
                            {"name": f"health-{n}", "intervalSeconds": 1, "http": {"url": url}} for n in apps_
                        ],
                    },
                }
                start = time.monotonic()
                custom.create_namespaced_custom_object(*API, ns, "rollbackrequests", body)
                wait(
                    "rollback",
                    lambda n=name: (
                        (
                            custom.get_namespaced_custom_object(*API, ns, "rollbackrequests", n).get("status")
                            or {}
                        ).get("phase")
                        == "Succeeded"
                    ),
                    interval=0.02,
                )
                flagops_s.append(time.monotonic() - start)

                start = time.monotonic()
                ran = subprocess.run(
                    ["bash", "-c", script],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                )
                script_s.append(time.monotonic() - start)
                stamps = dict(line.split() for line in ran.stdout.splitlines() if line.strip())
                begin = float(stamps["start"])
                script_steps.append({step: round(float(t) - begin, 3) for step, t in stamps.items()})

                # Back to the flags on, both ways, and wait for the dust to settle.
                custom.delete_namespaced_custom_object(*API, ns, "rollbackrequests", name)
                core.patch_namespaced_config_map("sh-flags", ns, {"data": on})
                wait(
                    "flags back",
                    lambda: core.read_namespaced_config_map("bench", ns).data["FLAG_0"] == "true",
                )
                settled()
        finally:
            op.stop()
            api.close()
            endpoint_server.shutdown()
        ratio = statistics.median(flagops_s) / statistics.median(script_s)
        return {
            "workloads": workloads,
            "rounds": rounds,
            "rollbackrequest_s": [round(v, 3) for v in flagops_s],
            "kubectl_script_s": [round(v, 3) for v in script_s],
            "rollbackrequest_median_s": round(statistics.median(flagops_s), 3),
            "kubectl_script_median_s": round(statistics.median(script_s), 3),
            "rollbackrequest_iqr_s": _iqr(flagops_s),
            "kubectl_script_iqr_s": _iqr(script_s),
            "ratio_of_medians": round(ratio, 3),
            "script_steps_first_round": script_steps[0],
            "script_steps_last_round": script_steps[-1],
        }


def _iqr(values: list[float]) -> list[float]:
    """The middle half of the values (25th to 75th percentile): the spread beside a median."""
    return [round(percentile(values, 25), 3), round(percentile(values, 75), 3)]


def _healthz_server() -> Any:
    import http.server  # noqa: PLC0415

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _create_all(custom: Any, bodies: list[tuple[str, str, dict[str, Any]]], threads: int = 8) -> None:
    """Create (namespace, plural, body) objects from a few threads: the client is not what is measured."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def create(item: tuple[str, str, dict[str, Any]]) -> None:
        custom.create_namespaced_custom_object(*API, item[0], item[1], item[2])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, bodies))


def bench_scale(
    workdir: Path,
    sets: int,
    flags: int = 20,
    rollbacks: int = 0,
    *,
    namespaces: int = 1,
    replicas: int = 1,
    shards: int = 1,
    profile: Path | None = None,
    memprobe: bool = False,
) -> dict[str, Any]:
    """`sets` sets of `flags` flags, spread over `namespaces` namespaces, exist before the operator
    (`replicas` processes, `--shards` when above 1) starts: start to all Ready, peak RSS of each,
    the API requests they sent; then `rollbacks` concurrent RollbackRequests."""
    with environment(workdir) as (plane, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        names = ["bench"] if namespaces == 1 else [f"bench-{i}" for i in range(namespaces)]
        for ns in [*names, "flagops-leases"]:
            core.create_namespace({"metadata": {"name": ns}})
        placed = [(names[i % namespaces], f"set-{i}") for i in range(sets)]
        created = time.monotonic()
        _create_all(
            custom, [(ns, "featureflagsets", flagset(name, flags, None, True)) for ns, name in placed]
        )
        create_s = time.monotonic() - created

        # Counted from one watch: a LIST of every set twice a second would cost the API server
        # more than the operator does at 10,000 sets, and be measured as the operator's time.
        ready = ReadyWatch(custom)

        sharding = (
            ("--shards", str(shards), "--leader-election-namespace", "flagops-leases") if shards > 1 else ()
        )
        components = plane.pids()
        cpu_before = {name: cpu_seconds(pid) for name, pid in components.items()}
        started = time.monotonic()
        ops = [
            Operator(
                kubeconfig,
                workdir / f"operator-{sets}-{i}.log",
                *sharding,
                profile=profile,
                memprobe=memprobe,
            )
            for i in range(replicas)
        ]
        try:
            wait("all Ready", lambda: ready.count() == sets, timeout=1800, interval=0.1)
            all_ready_s = time.monotonic() - started
            # Where the 2 cores went while the sets came up: the operator's share against the
            # control plane's (the client polling for Ready is included in kube-apiserver's).
            cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in components.items()}
            cpu["flagops"] = round(sum(cpu_seconds(op.proc.pid) for op in ops), 1)
            requests = sum(op.metric_sum("flagops_api_requests_total") for op in ops)
            result: dict[str, Any] = {
                "sets": sets,
                "flags_per_set": flags,
                "namespaces": namespaces,
                "replicas": replicas,
                "shards": shards,
                "create_s": round(create_s, 1),
                "start_to_all_ready_s": round(all_ready_s, 1),
                "peak_rss_mib": [round(op.peak_rss_mib(), 1) for op in ops],
                "api_requests": int(requests),
                "api_requests_per_set": round(requests / sets, 2),
                "api_requests_by_kind": ops[0].requests_by_kind(),
                "cpu_s_start_to_all_ready": cpu,
            }
            if rollbacks:
                started = time.monotonic()
                _create_all(
                    custom,
                    [
                        (
                            ns,
                            "rollbackrequests",
                            {
                                "apiVersion": "flagops.io/v1alpha1",
                                "kind": "RollbackRequest",
                                "metadata": {"name": f"rb-{name}"},
                                "spec": {"flagSet": name, "flags": ["FLAG_0"], "emergency": True},
                            },
                        )
                        for ns, name in placed[:rollbacks]
                    ],
                )

                def succeeded() -> bool:
                    listed = custom.list_cluster_custom_object(
                        *API, "rollbackrequests", _preload_content=False
                    )
                    items = json.loads(listed.data)["items"]
                    return (
                        sum((o.get("status") or {}).get("phase") == "Succeeded" for o in items) == rollbacks
                    )

                wait("rollbacks", succeeded, timeout=600, interval=0.5)
                result["concurrent_rollbacks"] = rollbacks
                result["rollbacks_all_succeeded_s"] = round(time.monotonic() - started, 1)
                result["peak_rss_mib"] = [round(op.peak_rss_mib(), 1) for op in ops]
            return result
        finally:
            ready.stop()
            for op in ops:
                op.stop()
            api.close()


class ReadyWatch:
    """The sets whose Ready condition is True, kept by one watch of all of them."""

    def __init__(self, custom: Any) -> None:
        self._ready: set[tuple[str, str]] = set()
        self._stream = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(custom,), daemon=True)
        self._thread.start()

    def _run(self, custom: Any) -> None:
        with contextlib.suppress(urllib3.exceptions.HTTPError):  # the stream closed by stop()
            for event in self._stream.stream(
                custom.list_cluster_custom_object, *API, "featureflagsets", timeout_seconds=3600
            ):
                obj = event["object"]
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                conditions = (obj.get("status") or {}).get("conditions", [])
                if event["type"] != "DELETED" and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in conditions
                ):
                    self._ready.add(key)
                else:
                    self._ready.discard(key)

    def count(self) -> int:
        return len(self._ready)

    def stop(self) -> None:
        self._stream.stop()


def bench_takeover(workdir: Path, rounds: int = 3) -> dict[str, Any]:
    """Three replicas, three shards: the holder of shard 0 is SIGKILLed; seconds until another
    replica holds its Lease and has reconciled a set in it (its flag edited just before the kill)."""
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, coordination, custom = (
            client.CoreV1Api(api),
            client.CoordinationV1Api(api),
            client.CustomObjectsApi(api),
        )
        from flagops.reconcile.shards import shard_of  # noqa: PLC0415

        ns = next(f"bench-{i}" for i in range(100) if shard_of(f"bench-{i}", 3) == 0)
        for name in (ns, "flagops-leases"):
            core.create_namespace({"metadata": {"name": name}})
        custom.create_namespaced_custom_object(*API, ns, "featureflagsets", flagset("s", 1, None, False))
        args = ("--shards", "3", "--leader-election-namespace", "flagops-leases")
        ops = [Operator(kubeconfig, workdir / f"replica-{i}.log", *args) for i in range(3)]
        takeovers: list[float] = []
        reconciled: list[float] = []

        def holder() -> str:
            try:
                lease = coordination.read_namespaced_lease("flagops-shard-0", "flagops-leases")
            except client.ApiException:
                return ""
            return lease.spec.holder_identity or ""

        def served() -> str | None:
            try:
                return str(core.read_namespaced_config_map("s", ns).data["FLAG_0"])
            except client.ApiException:
                return None

        try:
            for round_ in range(rounds):
                alive = {str(op.proc.pid): op for op in ops if op.proc.poll() is None}
                wait(
                    "shard 0 held",
                    lambda a=alive: holder().rsplit("_", 1)[-1] in a,
                    timeout=120,
                    interval=0.1,
                )
                victim = alive[holder().rsplit("_", 1)[-1]]
                value = round_ % 2 == 0
                want = "true" if value else "false"
                before = "false" if value else "true"
                wait("set served", lambda b=before: served() == b, timeout=60)
                # Edited just before the kill: whoever holds shard 0 next must serve it.
                victim.proc.kill()
                killed = time.monotonic()
                custom.patch_namespaced_custom_object(
                    *API, ns, "featureflagsets", "s", {"spec": flagset("s", 1, None, value)["spec"]}
                )
                wait(
                    "taken over",
                    lambda v=victim: holder() not in ("",) and not holder().endswith(f"_{v.proc.pid}"),
                    timeout=120,
                    interval=0.05,
                )
                takeovers.append(round(time.monotonic() - killed, 2))
                wait("served by the heir", lambda w=want: served() == w, timeout=120, interval=0.05)
                reconciled.append(round(time.monotonic() - killed, 2))
                victim.log.close()
                ops[ops.index(victim)] = Operator(kubeconfig, workdir / f"replica-r{round_}.log", *args)
            return {"rounds": rounds, "kill_to_lease_taken_s": takeovers, "kill_to_edit_served_s": reconciled}
        finally:
            for op in ops:
                if op.proc.poll() is None:
                    op.stop()
            api.close()


def bench_budget(workdir: Path, sets: int = 200, limit: int = 0) -> dict[str, Any]:
    """Flip one flag in `sets` sets at once; each set's flag is read by its own Deployment
    whose pods are Ready 2 s after they start. Peak concurrent rollouts are counted over the
    API server's sequence of Deployment versions (one watch), as flagops judges a rollout."""
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        names = [f"svc-{i}" for i in range(sets)]
        for name in names:
            body = deployment(name, {"kwok.flagops.io/ready-after": "2s"})
            body["spec"]["replicas"] = 1
            apps.create_namespaced_deployment(ns, body)
            custom.create_namespaced_custom_object(*API, ns, "featureflagsets", flagset(name, 1, {0: name}))
        args = [f"--max-concurrent-restarts={limit}"] if limit else []
        op = Operator(kubeconfig, workdir / "operator.log", "--namespace", ns, *args)
        try:

            def rolled_out(hashes: dict[str, str | None] | None = None) -> dict[str, str | None] | None:
                listed = apps.list_namespaced_deployment(ns, _preload_content=False)
                items = json.loads(listed.data)["items"]
                state = {d["metadata"]["name"]: template_annotations(d).get(HASH_ANNOTATION) for d in items}
                done = all(
                    rollout_progress(WorkloadKind.DEPLOYMENT, d).done
                    and state[d["metadata"]["name"]] is not None
                    and (hashes is None or state[d["metadata"]["name"]] != hashes[d["metadata"]["name"]])
                    for d in items
                )
                return state if done and len(items) == sets else None

            wait("first rollouts", lambda: rolled_out() is not None, timeout=900, interval=1)
            before = rolled_out()
            assert before is not None
            events: list[dict[str, Any]] = []
            stream = watch.Watch()

            def collect() -> None:
                with contextlib.suppress(urllib3.exceptions.HTTPError):  # the stream closed by stop()
                    for event in stream.stream(apps.list_namespaced_deployment, ns, timeout_seconds=3600):
                        events.append(event["raw_object"])

            threading.Thread(target=collect, daemon=True).start()
            started = time.monotonic()
            for name in names:
                custom.patch_namespaced_custom_object(
                    *API,
                    ns,
                    "featureflagsets",
                    name,
                    {"spec": {"flags": [flagset(name, 1, {0: name}, True)["spec"]["flags"][0]]}},
                )
            flipped_s = time.monotonic() - started
            wait("all rolled out", lambda: rolled_out(before) is not None, timeout=1800, interval=1)
            all_done_s = time.monotonic() - started
            stream.stop()
            rolling: set[str] = set()
            peak = 0
            for obj in events:
                name = obj["metadata"]["name"]
                if (
                    template_annotations(obj).get(HASH_ANNOTATION) != before[name]
                    and not rollout_progress(WorkloadKind.DEPLOYMENT, obj).done
                ):
                    rolling.add(name)
                else:
                    rolling.discard(name)
                peak = max(peak, len(rolling))
            return {
                "sets": sets,
                "max_concurrent_restarts": limit or None,
                "flip_all_s": round(flipped_s, 1),
                "flip_to_all_rolled_out_s": round(all_done_s, 1),
                "peak_concurrent_rollouts": peak,
                "peak_rss_mib": round(op.peak_rss_mib(), 1),
            }
        finally:
            op.stop()
            api.close()


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB, {system}, Python {platform.python_version()}"


BENCHMARKS = ("latency", "overhead", "scale", "shards", "takeover", "budget")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=(*BENCHMARKS, "all"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run under 5 minutes: 30 edits (maxParallel 4), 5 rounds of one flag, 300 sets, "
        "300 sets sharded, one takeover, no budget",
    )
    parser.add_argument("--edits", type=int, default=None, help="latency: edits (default 200; quick 30)")
    parser.add_argument("--rounds", type=int, default=None, help="overhead: rounds (default 15; quick 5)")
    parser.add_argument("--sets", type=int, nargs="*", default=None, help="scale: set counts")
    parser.add_argument(
        "--memprobe",
        action="store_true",
        help="scale: run the operator under tracemalloc (benchmarks/memprobe.py)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="overhead, scale: write the operator's pyinstrument profile beside this path",
    )
    args = parser.parse_args()
    quick = args.quick
    edits = args.edits or (30 if quick else 200)
    rounds = args.rounds or (5 if quick else 15)
    sizes = args.sets or ([300] if quick else [100, 1000, 3000, 10000])
    sharded_sets, sharded_namespaces = (300, 15) if quick else (9000, 90)
    results: dict[str, Any] = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }

    def record(name: str, outcome: dict[str, Any]) -> None:
        results.setdefault(name, []).append(outcome)
        print(json.dumps({name: outcome}), flush=True)

    def wanted(name: str) -> bool:
        return args.which in (name, "all") and not (quick and name == "budget" and args.which == "all")

    with tempfile.TemporaryDirectory(prefix="flagops-bench-") as tmp:
        work = Path(tmp)
        if wanted("latency"):
            for parallel in (4,) if quick else (1, 4):
                record("latency", bench_latency(work / f"latency-{parallel}", edits, parallel))
        if wanted("overhead"):
            for workloads in (1,) if quick else (1, 3):
                profile = args.profile.with_suffix(f".{workloads}.txt") if args.profile else None
                record("overhead", bench_overhead(work / f"overhead-{workloads}", rounds, workloads, profile))
        if wanted("scale"):
            for count in sizes:
                rollbacks = 100 if count == 1000 else 0
                profile = args.profile.with_suffix(f".scale-{count}.txt") if args.profile else None
                record(
                    "scale",
                    bench_scale(
                        work / f"scale-{count}",
                        count,
                        rollbacks=rollbacks,
                        profile=profile,
                        memprobe=args.memprobe,
                    ),
                )
        if wanted("shards"):
            for replicas in (1, 3):
                record(
                    "shards",
                    bench_scale(
                        work / f"shards-{replicas}",
                        sharded_sets,
                        namespaces=sharded_namespaces,
                        replicas=replicas,
                        shards=replicas,
                    ),
                )
        if wanted("takeover"):
            record("takeover", bench_takeover(work / "takeover", 1 if quick else 3))
        if wanted("budget"):
            for limit in (20, 0):
                record("budget", bench_budget(work / f"budget-{limit}", limit=limit))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
