"""`kubectl flagops`: drive FeatureFlagSets and RollbackRequests from the command line.

Exit codes: 0 done (a followed rollback Succeeded, or its dry run Planned); 1 not done:
the rollback ended Failed or Aborted, the API server refused the change (its message is
printed), lint found problems, or a guarded edit needs --force; 2 usage error; 3 the object
was not found or the API server could not be asked; 4 --timeout passed while waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import yaml

from flagops import kube, report
from flagops.plugin import lint, view
from flagops.reconcile import flagset as fs

OK: Final = 0
NOT_DONE: Final = 1
USAGE: Final = 2
UNAVAILABLE: Final = 3
TIMED_OUT: Final = 4

FIELD_MANAGER: Final = "kubectl-flagops"
TERMINAL: Final = ("Succeeded", "Failed", "Aborted", "Planned")
# How Argo CD marks what it manages: the tracking annotation (3.x default), or its label (2.x).
ARGOCD_TRACKING_ANNOTATION: Final = "argocd.argoproj.io/tracking-id"
ARGOCD_TRACKING_LABEL: Final = "app.kubernetes.io/instance"

Body = dict[str, Any]


class Failure(Exception):
    """Ends a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = NOT_DONE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Session:
    """One command's connection, namespace and output settings."""

    api: kube.Kube
    namespace: str
    all_namespaces: bool
    output: str | None
    style: view.Style
    terminal: bool

    @staticmethod
    def now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def emit(self, data: Any) -> None:
        print(_data(data, self.output or "yaml").rstrip())

    async def get(self, resource: kube.Resource, name: str) -> Body:
        try:
            obj = await self.api.get(resource.path(self.namespace, name))
        except kube.ApiError as err:
            raise _api_failure(err) from err
        if obj is None:
            kind = "FeatureFlagSet" if resource is kube.FLAGSETS else "RollbackRequest"
            raise Failure(f'{kind} "{name}" not found in namespace {self.namespace}', UNAVAILABLE)
        return obj

    async def patch(
        self, resource: kube.Resource, name: str, patch: Any, content_type: str = kube.MERGE_PATCH
    ) -> Body:
        try:
            return await self.api.patch(resource.path(self.namespace, name), patch, content_type=content_type)
        except kube.ApiError as err:
            raise _api_failure(err) from err

    async def follow(self, resource: kube.Resource, name: str) -> AsyncIterator[Body]:
        """The object now, then after every change: a watch, resumed when the server ends it."""
        path = resource.path(self.namespace)
        selector = f"metadata.name={name}"
        while True:
            try:
                items, version = await self.api.list_versioned(path, field_selector=selector)
            except kube.ApiError as err:
                raise _api_failure(err) from err
            if not items:
                raise Failure(f"{name} not found in namespace {self.namespace}", UNAVAILABLE)
            yield items[0]
            try:
                async for kind, obj in self.api.watch(
                    path, field_selector=selector, resource_version=version
                ):
                    if kind == "DELETED":
                        raise Failure(f"{name} was deleted", NOT_DONE)
                    if kind in ("ADDED", "MODIFIED"):
                        yield obj
            except kube.ApiError as err:
                if err.status not in (0, 410):
                    raise _api_failure(err) from err


def _api_failure(err: kube.ApiError) -> Failure:
    if err.status in (400, 403, 409, 422):
        return Failure(f"Error from server ({err.reason}): {err.message}", NOT_DONE)
    if err.not_found:
        return Failure(f"Error from server (NotFound): {err.message}", UNAVAILABLE)
    return Failure(f"cannot reach the API server: {err}", UNAVAILABLE)


# -- commands ----------------------------------------------------------------------------------


class Screen:
    """Draws a view: redrawn in place on a terminal, appended when changed otherwise."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.last: str | None = None

    def draw(self, text: str) -> None:
        if text == self.last:
            return
        if self.terminal:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            sys.stdout.write(("\n" if self.last is not None else "") + text + "\n")
        sys.stdout.flush()
        self.last = text


def _data(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=2, ensure_ascii=False)
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


async def get_set(s: Session, args: argparse.Namespace) -> int:
    def render(obj: Body) -> str:
        return _data(obj, s.output) if s.output else view.flag_set(obj, s.style, s.now())

    if not args.watch:
        print(render(await s.get(kube.FLAGSETS, args.name)).rstrip())
        return OK
    screen = Screen(s.terminal)
    async for obj in s.follow(kube.FLAGSETS, args.name):
        screen.draw(render(obj))
    return OK


async def get_rollback(s: Session, args: argparse.Namespace) -> int:
    async def render(obj: Body) -> str:
        if s.output:
            return _data(obj, s.output)
        return view.rollback(
            obj, await s.api.events_about(s.namespace, "RollbackRequest", args.name), s.style, s.now()
        )

    if not args.watch:
        print((await render(await s.get(kube.ROLLBACKS, args.name))).rstrip())
        return OK
    screen = Screen(s.terminal)
    async for obj in s.follow(kube.ROLLBACKS, args.name):
        screen.draw(await render(obj))
    return OK


async def list_all(s: Session, args: argparse.Namespace) -> int:
    namespace = None if s.all_namespaces else s.namespace
    try:
        sets = await s.api.list(kube.FLAGSETS.path(namespace))
        rollbacks = await s.api.list(kube.ROLLBACKS.path(namespace))
    except kube.ApiError as err:
        raise _api_failure(err) from err
    try:
        drills = await s.api.list(kube.DRILLS.path(namespace))
    except kube.ApiError:
        drills = []  # an older CRD set, or no right to list them: the rest still shows
    key = lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("creationTimestamp", ""))  # noqa: E731
    for items in (sets, rollbacks, drills):
        items.sort(key=key)
    if s.output:
        s.emit({"featureFlagSets": sets, "rollbackRequests": rollbacks, "rollbackDrills": drills})
    else:
        print(view.listing(sets, rollbacks, s.now(), s.all_namespaces, drills))
    return OK


def rollback_body(args: argparse.Namespace) -> Body:
    if bool(args.flags) == bool(args.all):
        raise Failure("name the flags to roll back, or pass --all (one of the two)", USAGE)
    kind = (
        "dry-run"
        if args.dry_run
        else "drill"
        if args.drill
        else "emergency"
        if args.emergency
        else "rollback"
    )
    spec: Body = {"flagSet": args.set}
    if args.all:
        spec["all"] = True
    else:
        spec["flags"] = list(dict.fromkeys(args.flags))
    for key, value in (
        ("emergency", args.emergency),
        ("dryRun", args.dry_run),
        ("drill", args.drill),
        ("reason", args.reason),
        ("incident", args.incident),
        ("detectedAt", args.detected_at),
    ):
        if value:
            spec[key] = value
    return {
        "apiVersion": f"{kube.ROLLBACKS.group}/{kube.ROLLBACKS.version}",
        "kind": "RollbackRequest",
        "metadata": {"generateName": f"{args.set}-{kind}-"[:58]},
        "spec": spec,
    }


async def _until(
    s: Session,
    name: str,
    done: Callable[[Body], bool],
    timeout: float | None,
    on_change: Callable[[Body], None],
) -> Body:
    async def watch() -> Body:
        async for obj in s.follow(kube.ROLLBACKS, name):
            on_change(obj)
            if done(obj):
                return obj
        raise AssertionError("unreachable")

    try:
        return await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        raise Failure(f"rollbackrequest/{name}: still not done after {timeout:g}s", TIMED_OUT) from None


async def rollback(s: Session, args: argparse.Namespace) -> int:
    body = rollback_body(args)
    await s.get(kube.FLAGSETS, args.set)  # a clear message before anything is created
    try:
        created = await s.api.create(kube.ROLLBACKS.path(s.namespace), body)
    except kube.ApiError as err:
        raise _api_failure(err) from err
    name = created["metadata"]["name"]
    if not s.output:
        print(f"rollbackrequest.flagops.io/{name} created")
    # The operator writes the plan before it changes anything: show what will happen.
    try:
        planned = await _until(
            s,
            name,
            lambda o: bool(o.get("status", {}).get("plan")) or o.get("status", {}).get("phase") in TERMINAL,
            args.plan_timeout,
            lambda o: None,
        )
    except Failure as err:
        if err.code != TIMED_OUT:
            raise
        planned = created
        if not s.output:
            print(f"no plan after {args.plan_timeout:g}s: is the flagops operator running?")
    if not s.output:
        print(view.plan(planned))
    if not args.wait:
        if s.output:
            s.emit(planned)
        return OK
    seen: list[str] = []

    def report(obj: Body) -> None:
        status = obj.get("status", {})
        phase = status.get("phase") or "Pending"
        if not s.output and (not seen or seen[-1] != phase):
            at = view.clock(s.now().isoformat())
            print(f"{at}  {s.style.state(phase)}  {status.get('message', '')}".rstrip())
            sys.stdout.flush()
        seen.append(phase)

    final = await _until(
        s, name, lambda o: o.get("status", {}).get("phase") in TERMINAL, args.timeout, report
    )
    status = final.get("status", {})
    if s.output:
        s.emit(final)
    else:
        print(view.outcome(final))
    return OK if status.get("phase") in ("Succeeded", "Planned") else NOT_DONE


async def approve(s: Session, args: argparse.Namespace) -> int:
    obj = await s.get(kube.ROLLBACKS, args.name)
    status, spec = obj.get("status", {}), obj.get("spec", {})
    if spec.get("approved"):
        who = spec.get("approvedBy") or status.get("approvedBy") or "someone"
        print(f"rollbackrequest/{args.name} is already approved by {who}")
        return OK
    if status.get("phase") in TERMINAL:
        raise Failure(f"rollbackrequest/{args.name} already ended ({status['phase']}): nothing to approve")
    try:
        user = (await s.api.whoami()).get("username")
    except kube.ApiError as err:
        raise _api_failure(err) from err
    if not user:
        raise Failure("the API server did not say who you are (SelfSubjectReview): cannot fill approvedBy")
    await s.patch(kube.ROLLBACKS, args.name, {"spec": {"approved": True, "approvedBy": user}})
    print(f"rollbackrequest/{args.name} approved by {user}")
    return OK


async def abort(s: Session, args: argparse.Namespace) -> int:
    obj = await s.get(kube.ROLLBACKS, args.name)
    phase = obj.get("status", {}).get("phase")
    if phase in TERMINAL:
        raise Failure(f"rollbackrequest/{args.name} already ended ({phase}): nothing to abort")
    await s.patch(kube.ROLLBACKS, args.name, {"spec": {"abort": True}})
    print(f"rollbackrequest/{args.name} aborting (what was already applied stays applied; see its status)")
    return OK


async def release(s: Session, args: argparse.Namespace) -> int:
    obj = await s.get(kube.ROLLBACKS, args.name)
    if obj.get("spec", {}).get("release"):
        print(f"rollbackrequest/{args.name} is already released")
        return OK
    await s.patch(kube.ROLLBACKS, args.name, {"spec": {"release": True}})
    print(f"rollbackrequest/{args.name} released: its flags follow the set's spec again")
    return OK


def argocd_application(obj: Body) -> str | None:
    """The Argo CD Application that manages this object, if one does."""
    meta = obj.get("metadata", {})
    tracking = (meta.get("annotations") or {}).get(ARGOCD_TRACKING_ANNOTATION)
    if tracking:
        return str(tracking).split(":", 1)[0]
    labels = meta.get("labels") or {}
    if labels.get(ARGOCD_TRACKING_LABEL) and labels.get("app.kubernetes.io/managed-by") != "Helm":
        return str(labels[ARGOCD_TRACKING_LABEL])
    return None


async def toggle(s: Session, args: argparse.Namespace, enabled: bool) -> int:
    obj = await s.get(kube.FLAGSETS, args.set)
    flags = obj.get("spec", {}).get("flags", [])
    index = next((i for i, f in enumerate(flags) if f.get("name") == args.flag), None)
    if index is None:
        names = ", ".join(f["name"] for f in flags) or "none"
        raise Failure(f"{args.flag} is not a flag of FeatureFlagSet {args.set} (its flags: {names})")
    word = "enabled" if enabled else "disabled"
    type_ = flags[index].get("type", "boolean")
    if type_ != "boolean":
        raise Failure(
            f"{args.flag} is a {type_} flag: it serves its value, which enable/disable do not set; edit "
            f"spec.flags[{index}].value, or roll it back to its safeValue with `kubectl flagops rollback`"
        )
    app = argocd_application(obj)
    if app and not args.force:
        raise Failure(
            f"FeatureFlagSet {args.set} is managed by Argo CD (Application {app}): Git will undo this edit "
            "at the next sync. Change the flag in Git, or pass --force to edit it here anyway."
        )
    if bool(flags[index].get("enabled", False)) == enabled:
        print(f"featureflagset/{args.set}: {args.flag} is already {word} in the spec")
    else:
        await s.patch(
            kube.FLAGSETS,
            args.set,
            [
                {"op": "test", "path": f"/spec/flags/{index}/name", "value": args.flag},
                {"op": "add", "path": f"/spec/flags/{index}/enabled", "value": enabled},
            ],
            content_type=kube.JSON_PATCH,
        )
        print(f"featureflagset/{args.set}: {args.flag} {word}")
    holder = next((o for o in obj.get("status", {}).get("overrides", []) if o.get("flag") == args.flag), None)
    if holder:
        print(
            f"note: {args.flag} is held at {view.value_text(holder.get('value'))} by rollbackrequest/"
            f"{holder.get('heldBy')}; it serves the spec's value once that is released"
        )
    return OK


async def history(s: Session, args: argparse.Namespace) -> int:
    obj = await s.get(kube.FLAGSETS, args.set)
    try:
        rollbacks = [
            r
            for r in await s.api.list(kube.ROLLBACKS.path(s.namespace))
            if r.get("spec", {}).get("flagSet") == args.set
        ]
    except kube.ApiError as err:
        raise _api_failure(err) from err
    try:  # reading revisions is a right of its own (apps/controllerrevisions): without it, none
        revisions = await s.api.list(
            kube.CONTROLLER_REVISIONS.path(s.namespace), label_selector=fs.revision_selector(args.set)
        )
    except kube.ApiError:
        revisions = []
    events = await s.api.events_about(s.namespace, "FeatureFlagSet", args.set)
    entries = view.history(obj, rollbacks, events, fs.stored_revisions(revisions, obj["metadata"]["uid"]))
    if s.output:
        s.emit(entries)
    else:
        print(view.history_text(entries))
    return OK


async def incident_report(s: Session, args: argparse.Namespace) -> int:
    try:
        obj, events = await report.fetch(s.api, s.namespace, args.name)
    except kube.ApiError as err:
        raise _api_failure(err) from err
    if obj is None:
        raise Failure(f'RollbackRequest "{args.name}" not found in namespace {s.namespace}', UNAVAILABLE)
    sys.stdout.write(report.render(obj, events))
    return OK


def run_lint(args: argparse.Namespace) -> int:
    problems, seen = lint.check_paths(args.files)
    for problem in problems:
        print(problem.render(), file=sys.stderr)
    if problems:
        print(f"{len(problems)} invalid of {seen} flagops object(s)", file=sys.stderr)
        return NOT_DONE
    print(f"{seen} flagops object(s) valid")
    return OK


# -- command line ------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """kubectl's connection options, accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument(
        "--kubeconfig", default=s, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", default=s, help="kubeconfig context to use")
    common.add_argument("-n", "--namespace", default=s, help="namespace (default: the context's)")
    common.add_argument("--as", dest="as_user", default=s, metavar="USER", help="impersonate this user")
    common.add_argument(
        "--as-group",
        dest="as_groups",
        action="append",
        default=s,
        metavar="GROUP",
        help="impersonate this group",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("json", "yaml"), default=None, help="print data, not text")


def parser() -> argparse.ArgumentParser:
    common = _common()
    root = argparse.ArgumentParser(
        prog="kubectl flagops",
        description="Drive flagops feature flags and rollbacks.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common], **kwargs)

    get = command("get", "show a FeatureFlagSet or a RollbackRequest")
    get_sub = get.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, aliases, func, what in (
        ("set", ["flagset", "featureflagset", "ffs"], get_set, "flags, workloads and conditions of a set"),
        (
            "rollback",
            ["rollbacks", "rollbackrequest", "rbr"],
            get_rollback,
            "timeline, plan, checks and Events",
        ),
    ):
        p = get_sub.add_parser(kind, aliases=aliases, help=what, description=what, parents=[common])
        p.add_argument("name")
        p.add_argument("-w", "--watch", action="store_true", help="redraw on every change (Ctrl-C ends)")
        _output(p)
        p.set_defaults(func=func)

    p = command("list", "sets, rollbacks and drills, one line each", aliases=["ls"])
    p.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    _output(p)
    p.set_defaults(func=list_all)

    p = command("rollback", "request a rollback of flags to their safe values")
    p.add_argument("set", help="the FeatureFlagSet")
    p.add_argument("flags", nargs="*", metavar="FLAG", help="the flags to roll back")
    p.add_argument("--all", action="store_true", help="every flag of the set (the emergency rollback)")
    p.add_argument(
        "--emergency", action="store_true", help="skip the approval gate (if you may initiate one)"
    )
    p.add_argument("--reason", default="", help="why (kept in the request and its record)")
    p.add_argument("--incident", default="", help="incident reference, e.g. INC-2025-11-042")
    p.add_argument(
        "--detected-at", default=None, metavar="TIME", help="when the problem was detected (RFC 3339)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only write the plan; change nothing")
    mode.add_argument(
        "--drill", action="store_true", help="roll back, validate, then restore (a staging drill)"
    )
    p.add_argument("--wait", action="store_true", help="follow it to the end; exit 0 only if it Succeeded")
    p.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting after this long"
    )
    p.add_argument(
        "--plan-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the plan (30)",
    )
    _output(p)
    p.set_defaults(func=rollback)

    for name, func, what in (
        (
            "approve",
            approve,
            "approve a rollback as yourself (approvedBy is who the API server says you are)",
        ),
        ("abort", abort, "stop a running rollback"),
        ("release", release, "lift a rollback's lock: its flags follow the set's spec again"),
    ):
        p = command(name, what)
        p.add_argument("name", help="the RollbackRequest")
        p.set_defaults(func=func)

    for name, enabled in (("enable", True), ("disable", False)):
        p = command(name, f"{name} a flag in the set's spec")
        p.add_argument("set", help="the FeatureFlagSet")
        p.add_argument("flag", help="the flag")
        p.add_argument("--force", action="store_true", help="edit even when Argo CD manages the set")
        p.set_defaults(func=lambda s, a, on=enabled: toggle(s, a, on))

    p = command("history", "what changed when: flag changes and rollbacks, newest first")
    p.add_argument("set", help="the FeatureFlagSet")
    _output(p)
    p.set_defaults(func=history)

    p = command(
        "report", "a rollback's incident record as Markdown: timeline, plan, checks, durations, review"
    )
    p.add_argument("name", help="the RollbackRequest")
    p.set_defaults(func=incident_report)

    p = command("lint", "validate FeatureFlagSet and RollbackRequest YAML offline, as the API server does")
    p.add_argument("files", nargs="+", metavar="FILE", help="files or directories (- for stdin)")
    p.set_defaults(func=None)
    return root


async def _dispatch(
    args: argparse.Namespace, func: Callable[[Session, argparse.Namespace], Awaitable[int]]
) -> int:
    identity = kube.Identity(
        impersonate=getattr(args, "as_user", None),
        groups=tuple(getattr(args, "as_groups", ()) or ()),
        field_manager=FIELD_MANAGER,
    )
    try:
        client = kube.Kube.connect(
            getattr(args, "kubeconfig", None), context=getattr(args, "context", None), identity=identity
        )
    except Exception as err:  # the kubernetes loaders raise several kinds
        raise Failure(f"cannot load a kubeconfig: {err}", UNAVAILABLE) from err
    terminal = sys.stdout.isatty()
    session = Session(
        api=client,
        namespace=getattr(args, "namespace", None) or client.namespace,
        all_namespaces=bool(getattr(args, "all_namespaces", False)),
        output=getattr(args, "output", None),
        style=view.Style(colour=terminal and not os.environ.get("NO_COLOR")),
        terminal=terminal,
    )
    task = asyncio.ensure_future(func(session, args))
    loop = asyncio.get_running_loop()
    # Ctrl-C ends a watch cleanly: cancel the command, close the connection, exit 0.
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return OK
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.func is None:
            return run_lint(args)
        return asyncio.run(_dispatch(args, args.func))
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return OK
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return OK


if __name__ == "__main__":
    sys.exit(main())
