"""The `flagops` command: `flagops run` starts the operator, `flagops report` prints an incident
record, `flagops crds` writes the CRDs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import kopf

from flagops import crdgen, handlers, kube, metrics, report
from flagops.controller.leader import LeaderElector, LeadershipLost, own_identity
from flagops.controller.runtime import Controller, Settings
from flagops.controller.shards import Shards
from flagops.reconcile.shards import shard_of
from flagops.reconcile.targets import AllowedTarget, TargetPolicy

logger = logging.getLogger("flagops")


def _own_namespace(client: kube.Kube) -> str:
    """The namespace the operator runs in: $POD_NAMESPACE, else the ServiceAccount's (in a pod)
    or the kubeconfig context's."""
    return os.environ.get("POD_NAMESPACE") or client.namespace


async def _target_policy(client: kube.Kube, args: argparse.Namespace) -> TargetPolicy:
    """--allowed-targets, and the API server's own address, which checks may never query."""
    host, port = client.server_address
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    return TargetPolicy.parse(
        args.allowed_targets, api_server=(host, port), api_server_addresses=[str(i[4][0]) for i in infos]
    )


def _shard(client: kube.Kube, controller: Controller, lease_namespace: str, count: int) -> Shards:
    """This replica's part in `count` shards: the controller acts only where it holds the Lease."""

    def in_shard(shard: int) -> Callable[[str], bool]:
        return lambda namespace: shard_of(namespace, count) == shard

    shards = Shards(
        client,
        lease_namespace,
        count,
        identity=own_identity(),
        acquired=lambda shard: controller.enqueue_where(in_shard(shard)),
        drain=lambda shard: controller.drain(in_shard(shard)),
    )
    controller.owns = shards.owns
    return shards


def _lost_leadership(ended: set[asyncio.Task[Any]]) -> bool:
    """Whether a Lease was lost, among the tasks that ended (re-raises any other error)."""
    lost = False
    for task in ended:
        if task.cancelled():
            continue
        try:
            task.result()
        except LeadershipLost as err:
            lost = True
            logger.error("%s: stopping so that only the leader acts", err)
    return lost


async def _operate(args: argparse.Namespace) -> int:
    client = kube.Kube.connect(args.kubeconfig)
    lease_namespace = args.leader_election_namespace or _own_namespace(client)
    sharded = args.shards > 1
    elector = LeaderElector(client, lease_namespace) if args.leader_elect and not sharded else None
    shards: Shards | None = None
    tasks: dict[str, asyncio.Task[Any]] = {}
    leading = elector is None
    server = None
    if args.metrics_port:

        def healthy() -> bool:
            return not any(task.done() for task in tasks.values())

        # A standby replica is ready too: ready to take over. Gating readiness on the Lease
        # would deadlock a rolling update (the new pod waits for the old one's Lease, the old
        # one waits for the new one to be Ready) and keep `replicas: 2` from ever settling.
        server = await metrics.serve(args.metrics_address, args.metrics_port, healthy=healthy, ready=healthy)
    stop = asyncio.Event()
    lost = False
    try:
        if elector is not None:
            await elector.acquire()
            leading = True
            tasks["lease"] = asyncio.create_task(elector.hold(), name="flagops-lease")
        settings = Settings(
            targets=await _target_policy(client, args),
            workers=args.workers,
            namespaces=tuple(args.namespace),
            resync_seconds=args.resync_seconds,
            max_concurrent_restarts=args.max_concurrent_restarts or None,
        )
        controller = Controller(client, settings)
        if sharded:
            shards = _shard(client, controller, lease_namespace, args.shards)
            tasks["shards"] = asyncio.create_task(shards.run(), name="flagops-shards")
        registry = kopf.OperatorRegistry()
        handlers.register(registry, controller)
        namespaced = bool(args.namespace)
        tasks["kopf"] = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=handlers.settings(namespaced=namespaced),
                clusterwide=not namespaced,
                namespaces=args.namespace or (),
                standalone=True,
                stop_flag=stop,
                # Else kopf asks the passwd database for the user, which an image's
                # non-root UID (65532) is not in, and the operator crashes at start. (kopf's
                # Identity is a NewType of str that it does not export.)
                identity=elector.identity if elector else own_identity(),  # type: ignore[arg-type]
            ),
            name="kopf",
        )
        tasks["workers"] = asyncio.create_task(controller.run(), name="flagops-controller")
        # kopf handles SIGINT/SIGTERM itself; its cleanup handler stops the workers (handlers.py).
        scope = f"namespaces {', '.join(args.namespace)}" if namespaced else "all namespaces"
        sharding = f", one of {args.shards} shards each (Leases in {lease_namespace})" if sharded else ""
        logger.info("flagops operator started, watching %s%s", scope, sharding)
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        lost = not stop.is_set() and _lost_leadership(done)
    finally:
        stop.set()
        for task in tasks.values():
            if task.get_name() != "kopf":
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        if elector is not None and leading and not lost:
            await elector.release()
        if shards is not None and not lost:
            await shards.release()
        if server is not None:
            await server.cleanup()
        await client.close()
        logger.info("flagops operator stopped")
    return 1 if lost else 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.kubeconfig:
        # kopf's login reads the same file.
        os.environ["KUBECONFIG"] = args.kubeconfig
    return asyncio.run(_operate(args))


def crds(args: argparse.Namespace) -> int:
    if args.check:
        stale = crdgen.stale()
        for path in stale:
            print(f"{path} is stale: run `flagops crds` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in crdgen.write():
        print(f"wrote {path}")
    return 0


async def _report(args: argparse.Namespace) -> int:
    client = kube.Kube.connect(args.kubeconfig, context=args.context)
    try:
        obj, events = await report.fetch(client, args.namespace or client.namespace, args.name)
    finally:
        await client.close()
    if obj is None:
        print(f'RollbackRequest "{args.name}" not found', file=sys.stderr)
        return 3
    sys.stdout.write(report.render(obj, events))
    return 0


def report_command(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_report(args))
    except kube.ApiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3


def _allowed_targets(value: str) -> str:
    """Refuse a bad entry when the operator starts, not when a check first runs."""
    for part in value.split(","):
        if part.strip():
            try:
                AllowedTarget.parse(part)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from err
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flagops", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run the operator")
    p_run.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, then in-cluster)"
    )
    p_run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    p_run.add_argument("--workers", type=int, default=4, help="concurrent reconciles (default 4)")
    p_run.add_argument("--metrics-address", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    p_run.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics, /healthz and /readyz (0: none)"
    )
    p_run.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding the Lease `flagops` (run several replicas safely)",
    )
    p_run.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: $POD_NAMESPACE, then the ServiceAccount's)",
    )
    p_run.add_argument(
        "--allowed-targets",
        action="append",
        default=[],
        type=_allowed_targets,
        metavar="TARGETS",
        help="hosts that http and prometheus checks, invariants and triggers may reach: addresses, "
        "networks (10.0.0.0/8), host names (*.monitoring.svc), each with an optional :PORT; "
        "comma-separated or repeated. Default: any but link-local, loopback and the API server",
    )
    p_run.add_argument(
        "--resync-seconds",
        type=float,
        default=600.0,
        help="every set gets a pass this often, healing what a missed event left (0: never; default 600)",
    )
    p_run.add_argument(
        "--max-concurrent-restarts",
        type=_non_negative,
        default=0,
        metavar="N",
        help="rollouts in progress at once across all sets; restarts beyond wait as Pending, so a "
        "change touching many sets proceeds in waves (rollbacks are never held back; 0: no limit)",
    )
    p_run.add_argument(
        "--shards",
        type=_positive,
        default=1,
        metavar="N",
        help="split the namespaces into N shards, each acted on by the replica holding its Lease "
        "`flagops-shard-I` (in the --leader-election-namespace); run up to N replicas with the same N. "
        "1 (default): no shards (see --leader-elect)",
    )
    p_run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p_run.set_defaults(func=run)

    p_report = sub.add_parser(
        "report", help="print a RollbackRequest's incident record as Markdown (timeline, checks, review)"
    )
    p_report.add_argument("name", help="the RollbackRequest")
    p_report.add_argument("--namespace", "-n", default=None, help="its namespace (default: the context's)")
    p_report.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    p_report.add_argument("--context", default=None, help="kubeconfig context")
    p_report.set_defaults(func=report_command)

    p_crds = sub.add_parser("crds", help="generate crds/ from the models")
    p_crds.add_argument("--check", action="store_true", help="fail if the committed CRDs are stale")
    p_crds.set_defaults(func=crds)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
