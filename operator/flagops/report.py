"""The post-incident record of a RollbackRequest, as Markdown: what the plan's lessons-learned
file asks for (timeline, plan, checks, durations against the targets, approvals, the review),
from the request itself. `flagops report` and `kubectl flagops report` print it."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from flagops import kube
from flagops.models.drill import DrillTargets
from flagops.reconcile.rollback import format_duration

Obj = Mapping[str, Any]

_STEPS = (
    ("Detected", "detectedAt", "spec"),
    ("Requested", "creationTimestamp", "metadata"),
    ("Picked up", "startedAt", "status"),
    ("Go-ahead (approved, or none needed)", "approvedAt", "status"),
    ("Flags applied", "flagsAppliedAt", "status"),
    ("Restarts done", "rolloutCompletedAt", "status"),
    ("Validated", "validatedAt", "status"),
    ("Values restored (drill)", "restoredAt", "status"),
    ("Escalated", "escalatedAt", "status"),
    ("Completed", "completedAt", "status"),
)


def _time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _clock(value: Any) -> str:
    moment = _time(value)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value not in (None, "") else "-"


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render(obj: Obj, events: Iterable[Obj] = (), targets: DrillTargets | None = None) -> str:
    sections = (
        _summary(obj),
        _timeline(obj),
        _durations(obj, targets or DrillTargets()),
        _plan(obj),
        _checks(obj),
        _events(events),
        _review(obj),
    )
    lines: list[str] = []
    for line in (line for section in sections for line in section):
        if line or (lines and lines[-1]):  # one blank line between blocks
            lines.append(line)
    return "\n".join(lines).rstrip() + "\n"


def _summary(obj: Obj) -> list[str]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    plan = status.get("plan") or {}
    kind = "drill" if spec.get("drill") else "dry run" if spec.get("dryRun") else "rollback"
    if spec.get("emergency"):
        kind = f"emergency {kind}"
    flags = "all flags" if spec.get("all") else ", ".join(spec.get("flags") or [])
    approval = "-"
    if status.get("approvedAt"):
        who = status.get("approvedBy")
        approval = (
            f"approved by {who} at {_clock(status['approvedAt'])}"
            if who
            else f"no approval needed ({plan.get('approvalReason') or plan.get('scenario') or ''})"
        )
    rows: list[list[Any]] = [
        ["RollbackRequest", f"{meta.get('namespace')}/{meta['name']}"],
        ["FeatureFlagSet", spec.get("flagSet")],
        ["What", f"{kind} of {flags}"],
        ["Outcome", f"**{status.get('phase') or 'Pending'}**: {status.get('message', '')}"],
        ["Reason", spec.get("reason")],
        ["Incident", spec.get("incident")],
        ["Scenario (authority matrix)", plan.get("scenario")],
        ["Approval", approval],
        ["Escalation", status.get("escalation")],
    ]
    return [
        f"# Incident record: {spec.get('incident') or meta['name']}",
        "",
        *_table(["Item", "Record"], rows),
    ]


def _timeline(obj: Obj) -> list[str]:
    parts = {"metadata": obj["metadata"], "spec": obj.get("spec") or {}, "status": obj.get("status") or {}}
    rows, previous = [], None
    for label, key, where in _STEPS:
        moment = _time(parts[where].get(key))
        if moment is None:
            continue
        rows.append(
            [label, _clock(parts[where][key]), _span((moment - previous).total_seconds()) if previous else ""]
        )
        if label != "Escalated":  # beside the steps, not one of them
            previous = moment
    return ["", "## Timeline", "", *_table(["Step", "At", "After the previous step"], rows)]


def _durations(obj: Obj, targets: DrillTargets) -> list[str]:
    seconds = (obj.get("status") or {}).get("seconds") or {}
    rows = []
    for label, key, limit in (
        ("Time to decision (detected to requested)", "timeToDecision", targets.decision_seconds),
        ("Time to execute (go-ahead to restarts done)", "timeToExecute", targets.execute_seconds),
        ("Time to validate (restarts done to checks passed)", "timeToValidate", targets.validate_seconds),
        ("Time to restore (drill)", "timeToRestore", None),
        ("Total", "total", None),
    ):
        took = seconds.get(key)
        if took is not None:
            verdict = "" if limit is None else ("met" if took <= limit else "**missed**")
            rows.append([label, _span(took), f"< {_span(limit)}" if limit else "", verdict])
    body = _table(["Stage", "Took", "Target", ""], rows) if rows else ["Not measured."]
    return ["", "## Durations against the plan's targets", "", *body]


def _plan(obj: Obj) -> list[str]:
    status = obj.get("status") or {}
    plan = status.get("plan") or {}
    changes = [
        f"- `{f['name']}`: {str(f.get('from')).lower()} → {str(f.get('to')).lower()}"
        + ("" if f.get("requested", True) else " (its prerequisite was rolled back)")
        for f in plan.get("flags") or []
    ]
    changes += [f"- `{name}`: already at its safe value" for name in plan.get("unchanged") or []]
    restarts = [
        f"- {w['kind']}/{w['name']} ({', '.join(w.get('flags') or [])})" for w in plan.get("workloads") or []
    ]
    lines = ["", "## Plan", "", "Flags:", "", *(changes or ["- none changed"]), "", "Restarts:", ""]
    lines += restarts or ["- none"]
    if status.get("workloads"):
        rows = [
            [f"{w['kind']}/{w['name']}", w.get("state"), _clock(w.get("readyAt"))]
            for w in status["workloads"]
        ]
        lines += ["", *_table(["Workload", "State", "Ready at"], rows)]
    return lines


def _checks(obj: Obj) -> list[str]:
    checks = (obj.get("status") or {}).get("checks") or []
    lines = ["", "## Checks", ""]
    if not checks:
        lines.append("No checks ran.")
    verdicts = {True: "pass", False: "fail", None: "inconclusive"}
    for check in checks:
        source = check.get("source") or "request"
        counts = f"{check.get('attempts', 0)} measurement(s), {check.get('failures', 0)} failed"
        lines += [
            f"### {check['name']} ({check.get('type')}, {source}): {check.get('phase')}",
            "",
            f"- Target: {_cell(check.get('target'))}",
            f"- Expectation: {_cell(check.get('expectation'))}",
            f"- {counts}; {check.get('message', '')}",
        ]
        if check.get("baseline") is not None:
            lines.append(f"- Baseline: {check['baseline']}")
        rows = [
            [_clock(m.get("at")), verdicts[m.get("passed")], m.get("value"), m.get("message")]
            for m in check.get("measurements") or []
        ]
        if rows:
            lines += ["", *_table(["At", "Result", "Value", "Message"], rows)]
        lines.append("")
    return lines


def _events(events: Iterable[Obj]) -> list[str]:
    rows = [
        [_clock(_event_time(e)), e.get("type"), e.get("reason"), e.get("note") or e.get("message")]
        for e in sorted(events, key=lambda e: str(_event_time(e) or ""))
    ]
    return ["", "## Events", "", *_table(["At", "Type", "Reason", "Message"], rows)] if rows else []


def _review(obj: Obj) -> list[str]:
    review = (obj.get("spec") or {}).get("review")
    lines = ["", "## Review", ""]
    if not review:
        return [
            *lines,
            "Not written yet: once the request has ended, add `spec.review` (rootCause, wentWell, "
            "couldImprove, actionItems).",
        ]
    lines += ["### Root cause", "", review.get("rootCause") or "-", ""]
    for heading, key in (("What went well", "wentWell"), ("What could improve", "couldImprove")):
        lines += [f"### {heading}", "", *([f"- {item}" for item in review.get(key) or []] or ["-"]), ""]
    items = [
        [i.get("description"), i.get("owner"), i.get("due"), "yes" if i.get("done") else "no"]
        for i in review.get("actionItems") or []
    ]
    lines += [
        "### Action items",
        "",
        *(_table(["Action", "Owner", "Due", "Done"], items) if items else ["-"]),
    ]
    if review.get("authors"):
        lines += ["", f"Review by {', '.join(review['authors'])}."]
    return lines


def _event_time(event: Obj) -> Any:
    return (
        (event.get("series") or {}).get("lastObservedTime")
        or event.get("eventTime")
        or event.get("lastTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
    )


async def fetch(
    client: kube.Kube, namespace: str, name: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The request and its Events."""
    obj = await client.get(kube.ROLLBACKS.path(namespace, name))
    if obj is None:
        return None, []
    return obj, await client.events_about(namespace, "RollbackRequest", name)
