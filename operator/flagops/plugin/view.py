"""What `kubectl flagops` prints: pure functions from API objects to text.

Colour only where the caller says the output is a terminal; otherwise plain, stable text
that scripts and tests can read.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flagops.reconcile.flagset.revisions import Revision
from flagops.reconcile.rollback import format_duration

Obj = Mapping[str, Any]

_COLOURS = {"green": "32", "red": "31", "yellow": "33", "blue": "34", "grey": "90", "bold": "1"}
# Phase or state -> (symbol, colour)
_MARKS = {
    "Succeeded": ("✔", "green"),
    "Ready": ("✔", "green"),
    "Passed": ("✔", "green"),
    "True": ("✔", "green"),
    "Planned": ("✔", "green"),
    "Failed": ("✖", "red"),
    "Degraded": ("✖", "red"),
    "Missing": ("✖", "red"),
    "Conflict": ("✖", "red"),
    "Aborted": ("✖", "red"),
    "AwaitingApproval": ("॥", "yellow"),
    "Pending": ("◌", "grey"),
    "False": ("◌", "grey"),
}
_RUNNING = ("◐", "blue")


@dataclass(frozen=True)
class Style:
    colour: bool = False

    def paint(self, text: str, colour: str) -> str:
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m" if self.colour else text

    def mark(self, state: str | None) -> str:
        symbol, colour = _MARKS.get(state or "Pending", _RUNNING)
        return self.paint(symbol, colour)

    def state(self, state: str | None) -> str:
        return f"{self.mark(state)} {state or 'Pending'}"


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def clock(value: str | None) -> str:
    """A timestamp as UTC wall-clock time, to the second."""
    moment = parse_time(value)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def age(value: str | None, now: datetime.datetime) -> str:
    moment = parse_time(value)
    return span((now - moment).total_seconds()) if moment else "-"


def between(start: str | None, end: str | None) -> str:
    a, b = parse_time(start), parse_time(end)
    return span((b - a).total_seconds()) if a and b else ""


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns (widths from the text without colour codes)."""
    if not rows:
        return []
    widths = [max(len(_plain(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(cell + " " * (widths[i] - len(_plain(cell))) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def _plain(text: str) -> str:
    while "\x1b[" in text:
        start = text.index("\x1b[")
        text = text[:start] + text[text.index("m", start) + 1 :]
    return text


def _tree(items: Sequence[str]) -> list[str]:
    return [("└── " if i == len(items) - 1 else "├── ") + item for i, item in enumerate(items)]


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | str):
        return json.dumps(value, sort_keys=True)[:60]
    return "-" if value is None else str(value)


def _set_state(obj: Obj) -> str:
    for type_ in ("Degraded", "Progressing"):
        cond = condition(obj, type_)
        if cond and cond.get("status") == "True":
            return type_
    ready = condition(obj, "Ready")
    return "Ready" if ready and ready.get("status") == "True" else "Pending"


def flag_set(obj: Obj, style: Style, now: datetime.datetime) -> str:
    """`get set`: the set, each flag (spec, served, holder), each workload, the conditions."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    state = _set_state(obj)
    ready = condition(obj, "Ready") or {}
    current = status.get("observedGeneration") == meta.get("generation")
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', '')}",
        f"Status:      {style.state(state)}" + ("" if current else " (generation not yet observed)"),
        f"Message:     {ready.get('message', '')}",
        f"ConfigMap:   {(status.get('configMap') or {}).get('name', spec.get('configMap') or meta['name'])}",
    ]
    timings = status.get("lastApply") or {}
    if timings.get("startedAt"):
        lines.append(
            f"Last apply:  {clock(timings.get('startedAt'))} (ConfigMap "
            f"{span(timings.get('configMapSeconds'))}, rollouts {span(timings.get('rolloutSeconds'))})"
        )
    effective = status.get("effective", {})
    holders = {o["flag"]: o for o in status.get("overrides", [])}
    changed = {f["name"]: f.get("lastChangedAt") for f in status.get("flags", [])}
    rows = [["FLAG", "SPEC", "SERVED", "CHANGED", "HELD BY"]]
    flags = spec.get("flags", [])
    for i, flag in enumerate(flags):
        name = flag["name"]
        served = effective.get(name)
        holder = holders.get(name)
        glyph = "└── " if i == len(flags) - 1 else "├── "
        wanted = flag.get("enabled", False) if flag.get("type", "boolean") == "boolean" else flag.get("value")
        served_text = value_text(served)
        if served is not None and served != wanted:
            served_text = style.paint(served_text, "yellow")
        rows.append(
            [
                glyph
                + ("⚑ " if served is not None and served == wanted and served is not False else "⚐ ")
                + name,
                value_text(wanted),
                served_text,
                age(changed.get(name), now) + (" ago" if changed.get(name) else ""),
                f"{holder['heldBy']} (since {clock(holder.get('since'))})" if holder else "",
            ]
        )
    lines += ["", *table(rows)]
    workloads = status.get("workloads", [])
    if workloads:
        rows = [["WORKLOAD", "STATE", "RESTARTED", "READY", "FLAGS"]]
        for i, w in enumerate(workloads):
            glyph = "└── " if i == len(workloads) - 1 else "├── "
            rows.append(
                [
                    f"{glyph}{w['kind']}/{w['name']}",
                    style.state(w.get("state")),
                    clock(w.get("restartedAt")) if w.get("restartedAt") else "-",
                    clock(w.get("readyAt")) if w.get("readyAt") else "-",
                    ",".join(w.get("flags", [])),
                ]
            )
        lines += ["", *table(rows)]
    triggers = status.get("triggers", [])
    if triggers:
        rows = [["TRIGGER", "STATE", "SINCE", "MESSAGE"]]
        rows += [
            [
                f"{t['flag']}/{t['name']}",
                style.state(t.get("state")),
                clock(t.get("since")),
                t.get("message", ""),
            ]
            for t in triggers
        ]
        lines += ["", *table(rows)]
    lines += ["", *conditions(obj, style)]
    return "\n".join(lines)


def conditions(obj: Obj, style: Style) -> list[str]:
    rows = [["CONDITION", "STATUS", "REASON", "MESSAGE"]]
    rows += [
        [
            c["type"],
            f"{style.mark(c.get('status'))} {c.get('status')}",
            c.get("reason", ""),
            c.get("message", ""),
        ]
        for c in obj.get("status", {}).get("conditions", [])
    ]
    return table(rows) if len(rows) > 1 else ["CONDITIONS  none yet"]


def timeline(obj: Obj) -> list[tuple[str, str | None]]:
    """(step, when) in the order a rollback goes through them."""
    status = obj.get("status", {})
    steps = [
        ("Created", obj["metadata"].get("creationTimestamp")),
        ("Picked up", status.get("startedAt")),
        ("Go-ahead", status.get("approvedAt")),
        ("Flags applied", status.get("flagsAppliedAt")),
        ("Rolled out", status.get("rolloutCompletedAt")),
        ("Validated", status.get("validatedAt")),
        ("Restored", status.get("restoredAt")),
        ("Escalated", status.get("escalatedAt")),
        ("Completed", status.get("completedAt")),
    ]
    # In time order: an escalation falls between the other steps.
    return sorted(((step, when) for step, when in steps if when), key=lambda s: parse_time(s[1]) or 0)


def rollback(obj: Obj, events: Iterable[Obj], style: Style, now: datetime.datetime) -> str:
    """`get rollback`: phase, timeline, plan, checks, recent Events."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    phase = status.get("phase")
    kind = "dry run" if spec.get("dryRun") else "drill" if spec.get("drill") else "rollback"
    flags = "all flags" if spec.get("all") else ", ".join(spec.get("flags", []))
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', '')}",
        f"FlagSet:     {spec.get('flagSet', '')}",
        f"Request:     {kind} of {flags}" + (" (emergency)" if spec.get("emergency") else ""),
        f"Phase:       {style.state(phase)}",
        f"Message:     {status.get('message', '')}",
    ]
    for label, key in (("Reason", "reason"), ("Incident", "incident")):
        if spec.get(key):
            lines.append(f"{label + ':':<13}{spec[key]}")
    if status.get("approvedBy"):
        lines.append(f"Approved by: {status['approvedBy']}")
    if status.get("locked"):
        lines.append("Lock:        holds its flags until released (kubectl flagops release NAME)")

    stamps = timeline(obj)
    rows = [["STEP", "AT", "AFTER PREVIOUS"]]
    previous: str | None = None
    for step, when in stamps:
        rows.append([step, clock(when), between(previous, when) if previous else ""])
        previous = when
    lines += ["", "Timeline", *table(rows, "  ")]
    durations = status.get("durations") or {}
    named = [
        ("decision", "timeToDecision"),
        ("execute", "timeToExecute"),
        ("validate", "timeToValidate"),
        ("restore", "timeToRestore"),
        ("total", "total"),
    ]
    shown = [f"{label} {durations[key]}" for label, key in named if durations.get(key)]
    if shown:
        lines.append("  Durations: " + ", ".join(shown))

    lines += ["", *plan_lines(obj, style)]

    checks = status.get("checks", [])
    lines += ["", "Checks"]
    if not checks:
        planned = (status.get("plan") or {}).get("checks", [])
        lines += [f"  {c['name']} ({c['type']}, {c.get('source', '')}): not started" for c in planned] or [
            "  none"
        ]
    for check in checks:
        lines += check_lines(check, style)

    recent = sorted(events, key=lambda e: _event_time(e) or "")[-8:]
    lines += ["", "Events"]
    rows = [["AT", "TYPE", "REASON", "MESSAGE"]]
    rows += [
        [clock(_event_time(e)), e.get("type", ""), e.get("reason", ""), e.get("message") or e.get("note", "")]
        for e in recent
    ]
    lines += table(rows, "  ") if recent else ["  none"]
    return "\n".join(lines)


def check_lines(check: Obj, style: Style) -> list[str]:
    """One check: where it stands, what it measures, its last measurements."""
    lines = [
        f"  {style.mark(check.get('phase'))} {check['name']} ({check.get('type')}, {check.get('source')}): "
        f"{check.get('phase', 'Pending')}, {check.get('consecutiveSuccesses', 0)} in a row, "
        f"{check.get('failures', 0)} failed of {check.get('attempts', 0)}"
    ]
    for label, key in (("target", "target"), ("expect", "expectation"), ("baseline", "baseline")):
        if check.get(key) not in (None, ""):
            lines.append(f"      {label + ':':<9} {check[key]}")
    for m in check.get("measurements", [])[-3:]:
        verdict = {True: "pass", False: "fail", None: "inconclusive"}[m.get("passed")]
        lines.append(
            f"      {clock(m.get('at'))}  {verdict:<12} {m.get('value', '')}  {m.get('message', '')}"
        )
    if check.get("message") and check.get("phase") in ("Passed", "Failed"):
        lines.append(f"      outcome:  {check['message']}")
    return lines


def plan_lines(obj: Obj, style: Style) -> list[str]:
    status = obj.get("status", {})
    plan = status.get("plan")
    lines = ["Plan"]
    if not plan:
        return [*lines, "  not written yet (the operator plans before it changes anything)"]
    scenario = plan.get("scenario")
    if scenario:
        approval = "approval required" if plan.get("approvalRequired") else "no approval needed"
        lines.append(f"  Scenario: {scenario}, {approval}")
    changes = [
        f"{f['name']}: {value_text(f.get('from'))} → {value_text(f.get('to'))}"
        + ("" if f.get("requested", True) else " (its prerequisite is rolled back)")
        for f in plan.get("flags", [])
    ]
    changes += [f"{name}: already at its safe value" for name in plan.get("unchanged", [])]
    lines += ["  Flags", *("    " + line for line in _tree(changes or ["none change"]))]
    workloads = [
        f"{w['kind']}/{w['name']} ({', '.join(w.get('flags', []))})" for w in plan.get("workloads", [])
    ]
    lines += ["  Restarts", *("    " + line for line in _tree(workloads or ["none"]))]
    checks = [f"{c['name']} ({c['type']}, {c.get('source', '')})" for c in plan.get("checks", [])]
    lines += ["  Checks", *("    " + line for line in _tree(checks or ["none"]))]
    results = status.get("workloads", [])
    if results:
        rows = [["WORKLOAD", "STATE", "READY AT"]]
        rows += [
            [f"{w['kind']}/{w['name']}", style.state(w.get("state")), clock(w.get("readyAt"))]
            for w in results
        ]
        lines += ["  Rollout", *table(rows, "    ")]
    return lines


def plan(obj: Obj, style: Style | None = None) -> str:
    return "\n".join(plan_lines(obj, style or Style()))


def outcome(obj: Obj, style: Style | None = None) -> str:
    """One paragraph at the end of `rollback --wait`: phase, message, durations."""
    status = obj.get("status", {})
    durations = status.get("durations") or {}
    timing = ", ".join(
        f"{label} {durations[key]}"
        for label, key in (
            ("decision", "timeToDecision"),
            ("execute", "timeToExecute"),
            ("validate", "timeToValidate"),
            ("restore", "timeToRestore"),
            ("total", "total"),
        )
        if durations.get(key)
    )
    state = (style or Style()).state(status.get("phase"))
    lines = [f"{obj['metadata']['name']}: {state}: {status.get('message', '')}"]
    if timing:
        lines.append(f"Durations: {timing}")
    return "\n".join(lines)


def _event_time(event: Obj) -> str | None:
    series = event.get("series") or {}
    return (
        str(
            series.get("lastObservedTime")
            or event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("metadata", {}).get("creationTimestamp")
            or ""
        )
        or None
    )


def set_line(obj: Obj, now: datetime.datetime) -> list[str]:
    status = obj.get("status", {})
    state = _set_state(obj)
    return [
        "FeatureFlagSet",
        obj["metadata"].get("namespace", ""),
        obj["metadata"]["name"],
        state,
        f"{status.get('enabledCount', '-')}/{status.get('flagCount', '-')} enabled, "
        f"{status.get('overrideCount', 0) or 0} held"
        + ("" if state == "Ready" else f"; {(condition(obj, state) or {}).get('message', '')}"),
        age(obj["metadata"].get("creationTimestamp"), now),
    ]


def rollback_line(obj: Obj, now: datetime.datetime) -> list[str]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    flags = "all" if spec.get("all") else ",".join(spec.get("flags", []))
    durations = status.get("durations") or {}
    timing = (
        f"execute {durations.get('timeToExecute') or '-'}, validate {durations.get('timeToValidate') or '-'}"
    )
    return [
        "RollbackRequest",
        obj["metadata"].get("namespace", ""),
        obj["metadata"]["name"],
        status.get("phase") or "Pending",
        f"{spec.get('flagSet', '')}: {flags}; {timing}" + ("; holds" if status.get("locked") else ""),
        age(obj["metadata"].get("creationTimestamp"), now),
    ]


def drill_line(obj: Obj, now: datetime.datetime) -> list[str]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    nxt = clock(status.get("nextRunAt")) if status.get("nextRunAt") else "none"
    last = (
        f"last {status.get('lastResult')} ({clock(status.get('lastRunAt'))})"
        if status.get("lastRunAt")
        else "never run"
    )
    return [
        "RollbackDrill",
        obj["metadata"].get("namespace", ""),
        obj["metadata"]["name"],
        "Suspended" if spec.get("suspend") else (status.get("lastResult") or "Scheduled"),
        f"stage {spec.get('stage', '')}, owner {spec.get('owner', '')}: next {nxt}, {last}",
        age(obj["metadata"].get("creationTimestamp"), now),
    ]


def listing(
    sets: Sequence[Obj],
    rollbacks: Sequence[Obj],
    now: datetime.datetime,
    namespaces: bool,
    drills: Sequence[Obj] = (),
) -> str:
    rows = [set_line(o, now) for o in sets] + [rollback_line(o, now) for o in rollbacks]
    rows += [drill_line(o, now) for o in drills]
    if not rows:
        return "No FeatureFlagSets, RollbackRequests or RollbackDrills found."
    header = ["KIND", "NAMESPACE", "NAME", "STATUS", "SUMMARY", "AGE"]
    if not namespaces:
        header, rows = header[:1] + header[2:], [r[:1] + r[2:] for r in rows]
    return "\n".join(table([header, *rows]))


def history(
    flag_set_obj: Obj, rollbacks: Sequence[Obj], events: Iterable[Obj], revisions: Iterable[Revision] = ()
) -> list[dict[str, Any]]:
    """What changed when, newest first: revisions of the served values, flag changes, rollbacks."""
    entries: list[dict[str, Any]] = [
        {
            "at": revision.recorded_at,
            "what": "revision",
            "name": str(revision.number),
            "summary": f"{revision.cause}: "
            + (", ".join(f"{flag} {value_text(change)}" for flag, change in revision.changed.items()) or "-"),
        }
        for revision in revisions
    ]
    for flag in flag_set_obj.get("status", {}).get("flags", []):
        if flag.get("lastChangedAt"):
            entries.append(
                {
                    "at": flag["lastChangedAt"],
                    "what": "flag",
                    "name": flag["name"],
                    "summary": f"{flag['name']} served {value_text(flag.get('value'))}",
                }
            )
    for event in events:  # restarts, triggers, corrections: the API server keeps them about an hour
        if _event_time(event):
            entries.append(
                {
                    "at": _event_time(event),
                    "what": "event",
                    "name": event.get("reason", ""),
                    "summary": event.get("message") or event.get("note", ""),
                }
            )
    for obj in rollbacks:
        spec, status = obj.get("spec", {}), obj.get("status", {})
        durations = status.get("durations") or {}
        flags = (
            "all flags"
            if spec.get("all")
            else f"to revision {spec['toRevision']}"
            if spec.get("toRevision")
            else ", ".join(spec.get("flags", []))
        )
        parts = [f"{status.get('phase') or 'Pending'}: {flags}"]
        parts += [f"reason: {spec['reason']}"] if spec.get("reason") else []
        parts += [f"incident: {spec['incident']}"] if spec.get("incident") else []
        timing = ", ".join(
            f"{label} {durations[key]}"
            for label, key in (
                ("execute", "timeToExecute"),
                ("validate", "timeToValidate"),
                ("total", "total"),
            )
            if durations.get(key)
        )
        parts += [timing] if timing else []
        entries.append(
            {
                "at": obj["metadata"].get("creationTimestamp"),
                "what": "rollback",
                "name": obj["metadata"]["name"],
                "phase": status.get("phase"),
                "reason": spec.get("reason", ""),
                "incident": spec.get("incident", ""),
                "durations": durations,
                "summary": "; ".join(parts),
            }
        )
    return sorted(
        entries,
        key=lambda e: parse_time(e["at"]) or datetime.datetime.min.replace(tzinfo=datetime.UTC),
        reverse=True,
    )


def history_text(entries: Sequence[Mapping[str, Any]]) -> str:
    if not entries:
        return "No changes recorded."
    rows = [["AT", "WHAT", "NAME", "SUMMARY"]]
    rows += [[clock(e["at"]), e["what"], e["name"], e["summary"]] for e in entries]
    return "\n".join(table(rows))
