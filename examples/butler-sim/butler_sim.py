"""A stand-in for the plan's Butler dialog service, for the demo and the e2e tests.

It reads its flags either from its environment, once, at start (`--flags-from=env`, as
the container on the real node does with `envFrom` the set's ConfigMap: only a restart
shows it a changed flag), or from the FeatureFlagSet's ConfigMap through the Kubernetes
API, watching it as a real app reloading flags.json would. It serves /metrics whose error
rate and latency depend on one flag: while USE_NEW_DIALOG_CONTEXT_REPO is enabled, 8% of
dialog requests fail and they take 350 ms instead of 40 ms (the plan's 21_01a triggers:
failures above 5%, latency far above the 100 ms baseline).

    python butler_sim.py --namespace epic21 --configmap epic21-flags --port 9101
    USE_NEW_DIALOG_CONTEXT_REPO=true python butler_sim.py --flags-from=env --port 9101

Traffic is simulated, ten requests a second, deterministic: 2 of every 25 fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

logger = logging.getLogger("butler-sim")


class Butler:
    def __init__(self, flag: str) -> None:
        self.flag = flag
        self.enabled = False
        registry = CollectorRegistry()
        self.registry = registry
        ProcessCollector(registry=registry)  # process_start_time_seconds tells one process from the next
        self.requests = Counter(
            "butler_dialog_requests_total", "Dialog requests handled.", ["outcome"], registry=registry
        )
        self.latency = Histogram(
            "butler_dialog_request_duration_seconds",
            "Dialog request latency.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1),
            registry=registry,
        )
        self.flag_gauge = Gauge(
            "butler_flag_enabled", "Flags as the service sees them.", ["flag"], registry=registry
        )
        for outcome in ("ok", "error"):
            self.requests.labels(outcome)  # export both series from the start

    def set_flags(self, data: dict[str, str]) -> None:
        enabled = data.get(self.flag) == "true"
        if enabled != self.enabled:
            logger.info("%s is now %s", self.flag, enabled)
        self.enabled = enabled
        self.flag_gauge.labels(self.flag).set(1 if enabled else 0)

    def serve_traffic(self, stop: threading.Event) -> None:
        count = 0
        while not stop.wait(0.1):
            count += 1
            # 2 of every 25 (8%), spread out, so any few-second window sees the same ratio.
            failed = self.enabled and count % 25 in (0, 12)
            self.requests.labels("error" if failed else "ok").inc()
            self.latency.observe(0.35 if self.enabled else 0.04)


def watch_flags(butler: Butler, namespace: str, name: str, stop: threading.Event) -> None:
    # Imported here: the container image (--flags-from=env) carries only prometheus_client.
    from kubernetes import client, watch  # noqa: PLC0415

    api = client.CoreV1Api()
    while not stop.is_set():
        try:
            stream = watch.Watch().stream(
                api.list_namespaced_config_map,
                namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=60,
            )
            for event in stream:
                obj = event["object"]
                data = dict(obj.data or {}) if event["type"] != "DELETED" else {}
                if "flags.json" in data:
                    parsed = json.loads(data["flags.json"])
                    data.update({k: "true" if v else "false" for k, v in parsed.items()})
                butler.set_flags(data)
        except Exception as err:  # the API server restarting, say: watch again
            logger.warning("watch ended: %s", err)
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags-from", choices=("configmap", "env"), default="configmap")
    parser.add_argument("--namespace", help="--flags-from=configmap: the ConfigMap's namespace")
    parser.add_argument("--configmap", help="--flags-from=configmap: the set's ConfigMap")
    parser.add_argument("--flag", default="USE_NEW_DIALOG_CONTEXT_REPO")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    butler = Butler(args.flag)
    stop = threading.Event()
    if args.flags_from == "env":
        butler.set_flags(dict(os.environ))
        logger.info("pid %d started with %s=%s", os.getpid(), args.flag, os.environ.get(args.flag, ""))
    else:
        if not (args.namespace and args.configmap):
            parser.error("--flags-from=configmap needs --namespace and --configmap")
        from kubernetes import config  # noqa: PLC0415

        config.load_kube_config(config_file=args.kubeconfig)
        watcher = threading.Thread(
            target=watch_flags, args=(butler, args.namespace, args.configmap, stop), daemon=True
        )
        watcher.start()
    start_http_server(args.port, addr=args.address, registry=butler.registry)
    logger.info("serving /metrics on %s:%d", args.address, args.port)
    # As a container's PID 1 it gets no default SIGTERM action: stop when the kubelet asks.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        butler.serve_traffic(stop)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
