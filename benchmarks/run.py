"""flagops benchmarks, on the local control plane (a fresh one per run).

    python benchmarks/run.py latency     flag edited -> ConfigMap updated -> restart patched (200 edits)
    python benchmarks/run.py overhead    a RollbackRequest vs the same steps as a kubectl script
    python benchmarks/run.py scale       sets of 20 flags: start to all Ready, peak RSS, API requests;
                                         100 concurrent RollbackRequests
    python benchmarks/run.py budget      a flag turned on in 200 sets at once, each read by its own
                                         Deployment: peak concurrent rollouts and time to all rolled
                                         out, with --max-concurrent-restarts 20 and with no limit
    python benchmarks/run.py all         all of them; prints a Markdown report (RESULTS.md)

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
    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.port = devcluster.free_port()
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flagops.cli",
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


def bench_latency(workdir: Path, edits: int = 200) -> dict[str, Any]:
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        for i in range(4):
            apps.create_namespaced_deployment(ns, deployment(f"app-{i}"))
        spec = flagset("bench", 20, {i: f"app-{i % 4}" for i in range(20)})
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
                "to_configmap_s": summary(to_cm),
                "to_restart_patched_s": summary(to_restart),
            }
        finally:
            op.stop()
            api.close()


def bench_overhead(workdir: Path, rounds: int = 5) -> dict[str, Any]:
    endpoint_server = _healthz_server()
    url = f"http://127.0.0.1:{endpoint_server.server_address[1]}/healthz"
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        apps.create_namespaced_deployment(ns, deployment("app"))
        apps.create_namespaced_deployment(ns, deployment("app-sh"))
        core.create_namespaced_config_map(ns, {"metadata": {"name": "sh-flags"}, "data": {"FLAG_0": "true"}})
        custom.create_namespaced_custom_object(
            *API, ns, "featureflagsets", flagset("bench", 1, {0: "app"}, True)
        )
        op = Operator(kubeconfig, workdir / "operator.log")
        script = f"""set -e
kubectl -n {ns} patch configmap sh-flags -p '{{"data":{{"FLAG_0":"false"}}}}'
kubectl -n {ns} rollout restart deployment/app-sh
kubectl -n {ns} rollout status deployment/app-sh --timeout=120s
curl -sf {url}
"""
        flagops_s, script_s = [], []
        try:
            kubectl(kubeconfig, "-n", ns, "wait", "ffs/bench", "--for=condition=Ready", "--timeout=60s")
            kubectl(kubeconfig, "-n", ns, "rollout", "status", "deployment/app", "--timeout=60s")
            for round_ in range(rounds):
                name = f"rb-{round_}"
                body = {
                    "apiVersion": "flagops.io/v1alpha1",
                    "kind": "RollbackRequest",
                    "metadata": {"name": name},
                    "spec": {
                        "flagSet": "bench",
                        "flags": ["FLAG_0"],
                        "emergency": True,
                        "checks": [{"name": "health", "intervalSeconds": 1, "http": {"url": url}}],
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
                subprocess.run(
                    ["bash", "-c", script],
                    check=True,
                    capture_output=True,
                    env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                )
                script_s.append(time.monotonic() - start)

                # Back to the flag on, both ways, and wait for the dust to settle.
                custom.delete_namespaced_custom_object(*API, ns, "rollbackrequests", name)
                core.patch_namespaced_config_map("sh-flags", ns, {"data": {"FLAG_0": "true"}})
                wait(
                    "flag back", lambda: core.read_namespaced_config_map("bench", ns).data["FLAG_0"] == "true"
                )
                kubectl(kubeconfig, "-n", ns, "wait", "ffs/bench", "--for=condition=Ready", "--timeout=60s")
                kubectl(kubeconfig, "-n", ns, "rollout", "status", "deployment/app", "--timeout=60s")
        finally:
            op.stop()
            api.close()
            endpoint_server.shutdown()
        ratio = statistics.median(flagops_s) / statistics.median(script_s)
        return {
            "rounds": rounds,
            "rollbackrequest_s": [round(v, 3) for v in flagops_s],
            "kubectl_script_s": [round(v, 3) for v in script_s],
            "ratio_of_medians": round(ratio, 3),
        }


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


def bench_scale(workdir: Path, sets: int, flags: int = 20, rollbacks: int = 0) -> dict[str, Any]:
    with environment(workdir) as (_, kubeconfig):
        api = config.new_client_from_config(str(kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace({"metadata": {"name": ns}})
        created = time.monotonic()
        for i in range(sets):
            custom.create_namespaced_custom_object(
                *API, ns, "featureflagsets", flagset(f"set-{i}", flags, None, True)
            )
        create_s = time.monotonic() - created

        def ready_count() -> int:
            items = custom.list_namespaced_custom_object(*API, ns, "featureflagsets")["items"]
            return sum(
                1
                for o in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (o.get("status") or {}).get("conditions", [])
                )
            )

        op = Operator(kubeconfig, workdir / f"operator-{sets}.log")
        started = time.monotonic()
        try:
            wait("all Ready", lambda: ready_count() == sets, timeout=900, interval=0.5)
            all_ready_s = time.monotonic() - started
            result: dict[str, Any] = {
                "sets": sets,
                "flags_per_set": flags,
                "create_s": round(create_s, 1),
                "start_to_all_ready_s": round(all_ready_s, 1),
                "peak_rss_mib": round(op.peak_rss_mib(), 1),
                "api_requests": int(op.metric_sum("flagops_api_requests_total")),
                "api_requests_per_set": round(op.metric_sum("flagops_api_requests_total") / sets, 2),
                "api_requests_by_kind": op.requests_by_kind(),
            }
            if rollbacks:
                started = time.monotonic()
                for i in range(rollbacks):
                    custom.create_namespaced_custom_object(
                        *API,
                        ns,
                        "rollbackrequests",
                        {
                            "apiVersion": "flagops.io/v1alpha1",
                            "kind": "RollbackRequest",
                            "metadata": {"name": f"rb-{i}"},
                            "spec": {"flagSet": f"set-{i}", "flags": ["FLAG_0"], "emergency": True},
                        },
                    )

                def succeeded() -> bool:
                    items = custom.list_namespaced_custom_object(*API, ns, "rollbackrequests")["items"]
                    return (
                        sum((o.get("status") or {}).get("phase") == "Succeeded" for o in items) == rollbacks
                    )

                wait("rollbacks", succeeded, timeout=600, interval=0.5)
                result["concurrent_rollbacks"] = rollbacks
                result["rollbacks_all_succeeded_s"] = round(time.monotonic() - started, 1)
                result["peak_rss_mib"] = round(op.peak_rss_mib(), 1)
            return result
        finally:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("latency", "overhead", "scale", "budget", "all"))
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sets", type=int, nargs="*", default=[100, 1000, 3000])
    args = parser.parse_args()
    results: dict[str, Any] = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with tempfile.TemporaryDirectory(prefix="flagops-bench-") as tmp:
        work = Path(tmp)
        if args.which in ("latency", "all"):
            results["latency"] = bench_latency(work / "latency", args.edits)
            print(json.dumps(results["latency"]), flush=True)
        if args.which in ("overhead", "all"):
            results["overhead"] = bench_overhead(work / "overhead", args.rounds)
            print(json.dumps(results["overhead"]), flush=True)
        if args.which in ("scale", "all"):
            results["scale"] = []
            for count in args.sets:
                outcome = bench_scale(work / f"scale-{count}", count, rollbacks=100 if count == 1000 else 0)
                results["scale"].append(outcome)
                print(json.dumps(outcome), flush=True)
        if args.which in ("budget", "all"):
            results["budget"] = []
            for limit in (20, 0):
                outcome = bench_budget(work / f"budget-{limit}", limit=limit)
                results["budget"].append(outcome)
                print(json.dumps(outcome), flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
