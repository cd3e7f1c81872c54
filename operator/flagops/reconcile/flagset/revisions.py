"""Revisions: every change of a set's served values, recorded as a ControllerRevision owned by
the set (what changed and why), so a RollbackRequest can go back to one (`toRevision`).

Revisions are read back from the API server on every change, never kept in memory: the
latest stored one is compared with what is about to be served.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flagops.reconcile.flagset.common import MANAGED_BY, SET_ANNOTATION, canonical_json
from flagops.reconcile.flagset.configmap import owner_reference

VALUES: Final = "flagops.io/values"  # what the set served, as JSON
HELD: Final = "flagops.io/held"  # flag -> the RollbackRequest holding it, as JSON
CHANGED: Final = "flagops.io/changed"  # flag -> {from, to}, as JSON
CAUSE: Final = "flagops.io/cause"
RECORDED_AT: Final = "flagops.io/recorded-at"

# A set name is at most 253 characters; "-r" and a revision number must fit in one too.
_MAX_PREFIX = 253 - len("-r") - 10


def revision_name(set_name: str, number: int) -> str:
    return f"{set_name[:_MAX_PREFIX]}-r{number}"


def revision_selector(set_name: str) -> str:
    return f"{SET_ANNOTATION}={set_name}"


@dataclass(frozen=True)
class Revision:
    number: int
    name: str
    values: dict[str, Any]
    held: dict[str, str]  # flag -> the RollbackRequest holding it when recorded
    cause: str
    recorded_at: str = ""
    changed: dict[str, Any] = field(default_factory=dict)  # flag -> the value it changed to

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Revision | None:
        meta = obj.get("metadata") or {}
        notes = meta.get("annotations") or {}
        try:
            values = json.loads(notes[VALUES])
            held = json.loads(notes.get(HELD) or "{}")
            changed = json.loads(notes.get(CHANGED) or "{}")
        except (KeyError, ValueError, TypeError):
            return None  # not one flagops wrote, or edited beyond reading: ignored
        if not isinstance(values, dict) or not isinstance(held, dict) or not isinstance(changed, dict):
            return None
        return cls(
            number=int(obj.get("revision") or 0),
            name=str(meta.get("name", "")),
            values=values,
            held={str(k): str(v) for k, v in held.items()},
            cause=str(notes.get(CAUSE, "")),
            recorded_at=str(notes.get(RECORDED_AT, "")),
            changed={str(k): v.get("to") for k, v in changed.items() if isinstance(v, dict)},
        )


def stored(objs: Iterable[Mapping[str, Any]], set_uid: str) -> list[Revision]:
    """This set's revisions (owned by this very set, not a predecessor of its name), oldest first."""
    owned = [
        o
        for o in objs
        if any(ref.get("uid") == set_uid for ref in (o.get("metadata") or {}).get("ownerReferences") or [])
    ]
    found = [r for r in (Revision.parse(o) for o in owned) if r is not None]
    return sorted(found, key=lambda r: r.number)


def cause_of(
    latest: Revision | None, values: Mapping[str, Any], held: Mapping[str, str], generation: int
) -> str:
    """Why the served values differ from the latest revision's: a rollback that now holds a
    changed flag, a release of one, or an edit of the spec."""
    if latest is None:
        return "created"
    changed = [f for f in values if f not in latest.values or latest.values[f] != values[f]]
    rolled_back = sorted({held[f] for f in changed if f in held and latest.held.get(f) != held[f]})
    released = sorted({latest.held[f] for f in changed if f in latest.held and f not in held})
    if rolled_back:
        return f"rollback {', '.join(rolled_back)}"
    if released:
        return f"release {', '.join(released)}"
    return f"spec edit (generation {generation})"


def next_revision(
    *,
    namespace: str,
    set_name: str,
    set_uid: str,
    latest: Revision | None,
    number: int,
    values: Mapping[str, Any],
    held: Mapping[str, str],
    generation: int,
    now: datetime.datetime,
) -> dict[str, Any] | None:
    """The ControllerRevision `number` for `values`, or None when the latest one has them."""
    if latest is not None and latest.values == dict(values):
        return None
    before = latest.values if latest else {}
    changed = {
        f: {"from": before.get(f), "to": values[f]}
        for f in values
        if f not in before or before[f] != values[f]
    }
    # In annotations, not `data`: data is compared byte for byte on every update, and the garbage
    # collector's orphaning re-encodes it the Go way, which would be refused as a change of it.
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(set_name, number),
            "namespace": namespace,
            "labels": {**MANAGED_BY, SET_ANNOTATION: set_name},
            "annotations": {
                VALUES: canonical_json(dict(values)),
                HELD: canonical_json(dict(held)),
                CHANGED: canonical_json(changed),
                CAUSE: cause_of(latest, values, held, generation),
                RECORDED_AT: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "ownerReferences": [owner_reference("FeatureFlagSet", set_name, set_uid)],
        },
        "revision": number,
        "data": {},  # required; an empty object survives any re-encoding
    }


def to_prune(revisions: list[Revision], *, keep: int) -> list[str]:
    """The oldest of `revisions` beyond the newest `keep`."""
    return [r.name for r in revisions[: max(len(revisions) - keep, 0)]]
