"""The `flagops` command: `flagops run` starts the operator, `flagops crds` writes the CRDs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import kopf

from flagops import crdgen, handlers, kube, metrics
from flagops.controller.runtime import Controller

logger = logging.getLogger("flagops")


async def _operate(args: argparse.Namespace) -> None:
    client = kube.Kube.connect(args.kubeconfig)
    controller = Controller(client, workers=args.workers)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, controller)
    stop = asyncio.Event()
    namespaced = bool(args.namespace)
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=handlers.settings(namespaced=namespaced),
            clusterwide=not namespaced,
            namespaces=args.namespace or (),
            standalone=True,
            stop_flag=stop,
        ),
        name="kopf",
    )
    workers = asyncio.create_task(controller.run(), name="flagops-controller")
    server = None
    if args.metrics_port:

        def healthy() -> bool:
            return not operator.done() and not workers.done()

        server = await metrics.serve(args.metrics_address, args.metrics_port, healthy=healthy, ready=healthy)
    # kopf handles SIGINT/SIGTERM itself; its cleanup handler stops the workers (handlers.py).
    scope = f"namespaces {', '.join(args.namespace)}" if namespaced else "all namespaces"
    logger.info("flagops operator started, watching %s", scope)
    try:
        done, _ = await asyncio.wait({operator, workers}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and not stop.is_set():
                task.result()  # re-raise what ended it
    finally:
        stop.set()
        workers.cancel()
        await asyncio.gather(operator, workers, return_exceptions=True)
        if server is not None:
            await server.cleanup()
        await client.close()
        logger.info("flagops operator stopped")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.kubeconfig:
        # kopf's login reads the same file.
        os.environ["KUBECONFIG"] = args.kubeconfig
    asyncio.run(_operate(args))
    return 0


def crds(args: argparse.Namespace) -> int:
    if args.check:
        stale = crdgen.stale()
        for path in stale:
            print(f"{path} is stale: run `flagops crds` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in crdgen.write():
        print(f"wrote {path}")
    return 0


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
    p_run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p_run.set_defaults(func=run)

    p_crds = sub.add_parser("crds", help="generate crds/ from the models")
    p_crds.add_argument("--check", action="store_true", help="fail if the committed CRDs are stale")
    p_crds.set_defaults(func=crds)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
