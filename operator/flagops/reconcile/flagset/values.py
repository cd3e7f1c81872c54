"""Served values: the spec, with the locks in force, then prerequisites applied."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flagops.models.flagset import (
    FeatureFlagSetSpec,
    Override,
)

# -- served values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What each flag serves, and why some enabled flags do not."""

    values: dict[str, bool]
    blocked: dict[str, str] = field(default_factory=dict)  # flag -> what to fix
    cycle: tuple[str, ...] = ()
    held: dict[str, Override] = field(default_factory=dict)  # flag -> the override in force


def resolve(spec: FeatureFlagSetSpec, overrides: Iterable[Override] = ()) -> Resolution:
    """Spec values, with overrides in force, then prerequisites applied transitively.

    A flag serves True only when it is on and every flag it requires serves True. A flag in
    a dependency cycle serves False: there is no order in which to enable it safely.
    """
    wanted = {flag.name: flag.enabled for flag in spec.flags}
    held = {o.flag: o for o in overrides if o.flag in wanted}
    for name, override in held.items():
        wanted[name] = override.value
    requires = {flag.name: [r for r in flag.requires if r in wanted] for flag in spec.flags}

    served: dict[str, bool] = {}
    blocked: dict[str, str] = {}
    cycle: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> bool:
        if name in served:
            return served[name]
        if name in visiting:
            loop = visiting[visiting.index(name) :]
            cycle.extend(n for n in loop if n not in cycle)
            return False
        visiting.append(name)
        value = wanted[name]
        for prerequisite in requires[name]:
            ok = visit(prerequisite)
            if value and not ok and name not in blocked:
                blocked[name] = (
                    f"{name} is enabled but requires {prerequisite}, which is disabled; "
                    f"enable {prerequisite} first"
                )
            value = value and ok
        visiting.pop()
        served[name] = value
        return value

    for name in wanted:
        visit(name)
    for name in cycle:
        served[name] = False
        blocked[name] = (
            f"{name} is part of a dependency cycle ({' -> '.join([*cycle, cycle[0]])}); "
            "remove one of the requires"
        )
    return Resolution(values=served, blocked=blocked, cycle=tuple(cycle), held=held)
