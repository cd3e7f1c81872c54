"""Served values: the spec, with the locks in force, then prerequisites applied."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flagops.models.flagset import (
    FeatureFlagSetSpec,
    FlagType,
    Override,
)

# -- served values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What each flag serves, and why some enabled flags do not."""

    values: dict[str, Any]  # flag -> the value served, of the flag's type
    blocked: dict[str, str] = field(default_factory=dict)  # flag -> what to fix
    cycle: tuple[str, ...] = ()
    held: dict[str, Override] = field(default_factory=dict)  # flag -> the override in force
    on: dict[str, bool] = field(default_factory=dict)  # flag -> serving its spec value, not the safe one


def resolve(spec: FeatureFlagSetSpec, overrides: Iterable[Override] = ()) -> Resolution:
    """Spec values, with overrides in force, then prerequisites applied transitively.

    A boolean flag serves True only when it is on and every flag it requires serves True; a
    flag of another type serves its value when every flag it requires serves True, else its
    safe value. A flag in a dependency cycle serves False (or its safe value): there is no
    order in which to enable it safely.
    """
    flags = {flag.name: flag for flag in spec.flags}
    wanted = {name: flag.wanted for name, flag in flags.items()}
    held = {o.flag: o for o in overrides if o.flag in wanted}
    for name, override in held.items():
        wanted[name] = override.value
    requires = {flag.name: [r for r in flag.requires if r in wanted] for flag in spec.flags}

    on: dict[str, bool] = {}
    blocked: dict[str, str] = {}
    cycle: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> bool:
        if name in on:
            return on[name]
        if name in visiting:
            loop = visiting[visiting.index(name) :]
            cycle.extend(n for n in loop if n not in cycle)
            return False
        visiting.append(name)
        boolean = flags[name].type == FlagType.BOOLEAN
        state = bool(wanted[name]) if boolean else True
        for prerequisite in requires[name]:
            ok = visit(prerequisite)
            if state and not ok and name not in blocked:
                blocked[name] = (
                    f"{name} is enabled but requires {prerequisite}, which is disabled; "
                    f"enable {prerequisite} first"
                    + ("" if boolean else f" ({name} serves its safeValue meanwhile)")
                )
            state = state and ok
        visiting.pop()
        on[name] = state
        return state

    for name in wanted:
        visit(name)
    for name in cycle:
        on[name] = False
        blocked[name] = (
            f"{name} is part of a dependency cycle ({' -> '.join([*cycle, cycle[0]])}); "
            "remove one of the requires"
        )
    served = {
        name: on[name]
        if flags[name].type == FlagType.BOOLEAN
        else (wanted[name] if on[name] else flags[name].safe)
        for name in wanted
    }
    return Resolution(values=served, blocked=blocked, cycle=tuple(cycle), held=held, on=on)
