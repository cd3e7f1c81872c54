"""Where a rollback's lock lives: on the RollbackRequest itself, in metadata.

A request that holds flags carries the annotation `flagops.io/holds` (the flags, the values it
holds them at, and since when), written before the set serves those values and removed when
it is released. Annotations survive what status does not: a status wipe, a restore from a
backup (which restores objects without status), the set deleted and re-applied by GitOps.
So on every pass a set computes its overrides from the requests of its namespace; the set's
`status.overrides` is only a view of that.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from flagops.models.flagset import FeatureFlagSetSpec, Override, type_error

HOLDS_ANNOTATION: Final = "flagops.io/holds"


def holds_value(flags: Mapping[str, Any], since: datetime.datetime) -> str:
    return json.dumps(
        {"flags": dict(sorted(flags.items())), "since": since.strftime("%Y-%m-%dT%H:%M:%SZ")},
        separators=(",", ":"),
    )


def held_annotation(body: Mapping[str, Any]) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(HOLDS_ANNOTATION)
    return value if isinstance(value, str) else None


def _created(body: Mapping[str, Any]) -> datetime.datetime:
    raw = str((body.get("metadata") or {}).get("creationTimestamp") or "1970-01-01T00:00:00Z")
    return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))


def held_by(body: Mapping[str, Any], set_spec: FeatureFlagSetSpec) -> list[Override]:
    """The overrides one request holds. An annotation that cannot be read (edited by hand)
    holds the request's flags at their safe values: a lock errs on the side of holding."""
    raw = held_annotation(body)
    if raw is None:
        return []
    name = str(body["metadata"]["name"])
    safe = {f.name: f.safe for f in set_spec.flags}
    types = {f.name: f.type for f in set_spec.flags}
    try:
        parsed = json.loads(raw)
        flags = {
            str(k): v if k not in types or type_error(k, "value", types[k], v) is None else safe[k]
            for k, v in dict(parsed["flags"]).items()
        }
        since = datetime.datetime.fromisoformat(str(parsed["since"]).replace("Z", "+00:00"))
    except (ValueError, TypeError, KeyError):
        spec = body.get("spec") or {}
        requested = list(safe) if spec.get("all") else list(spec.get("flags") or [])
        flags = {flag: safe[flag] for flag in requested if flag in safe}
        since = _created(body)
    return [
        Override(flag=flag, value=value, held_by=name, since=since)
        for flag, value in flags.items()
        if flag in safe
    ]


def overrides(
    set_name: str, set_spec: FeatureFlagSetSpec, requests: Iterable[Mapping[str, Any]]
) -> list[Override]:
    """Every override in force for a set, from the requests of its namespace, oldest first."""
    found = [
        override
        for body in requests
        if (body.get("spec") or {}).get("flagSet") == set_name
        and not (body.get("metadata") or {}).get("deletionTimestamp")
        for override in held_by(body, set_spec)
    ]
    return sorted(found, key=lambda o: (o.since, o.held_by, o.flag))
