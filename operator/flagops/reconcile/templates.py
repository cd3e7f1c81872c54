"""Check templates filled in: a templateRef and its args become the concrete check that goes
into a request's frozen plan."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from flagops import conditions as c
from flagops.models.checks import Check, TemplateKind
from flagops.models.templates import CheckTemplateSpec

PLACEHOLDER: Final = re.compile(r"\{\{\s*args\.([a-zA-Z][-a-zA-Z0-9_]*)\s*\}\}")

TemplateKey = tuple[str, str]  # (kind, name)


class TemplateError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key(check: Check) -> TemplateKey | None:
    ref = check.template_ref
    return (str(ref.kind), ref.name) if ref else None


def _fill(value: Any, args: Mapping[str, str], unknown: set[str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in args:
                unknown.add(match.group(1))
                return match.group(0)
            return args[match.group(1)]

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: _fill(v, args, unknown) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, args, unknown) for v in value]
    return value


def resolve(check: Check, template: CheckTemplateSpec | None, namespace: str) -> Check:
    """The concrete check a templateRef stands for; TemplateError says what to fix."""
    ref = check.template_ref
    if ref is None:
        return check
    where = f" in namespace {namespace}" if ref.kind == TemplateKind.CHECK_TEMPLATE else ""
    what = f"check {check.name}: {ref.kind} {ref.name}"
    if template is None:
        raise TemplateError(
            c.CHECK_TEMPLATE_NOT_FOUND,
            f"{what} not found{where}; create it or fix templateRef, then create a new request "
            "(nothing was changed)",
        )
    declared = {a.name: a.default for a in template.args}
    extra = sorted(set(check.args) - set(declared))
    if extra:
        raise TemplateError(
            c.INVALID_CHECK_ARGS,
            f"{what} has no argument {', '.join(extra)} (its arguments: {', '.join(declared) or 'none'}); "
            "fix args (nothing was changed)",
        )
    values = {name: check.args.get(name, default) for name, default in declared.items()}
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        raise TemplateError(
            c.INVALID_CHECK_ARGS,
            f"{what} needs argument {', '.join(missing)}, which has no default; give it in args "
            "(nothing was changed)",
        )
    unknown: set[str] = set()
    filled = {name: value for name, value in values.items() if value is not None}
    body = _fill(template.check.model_dump(by_alias=True, exclude_none=True), filled, unknown)
    if unknown:
        raise TemplateError(
            c.INVALID_CHECK_ARGS,
            f"{what} uses {{{{args.{sorted(unknown)[0]}}}}}, which it does not declare; fix the template "
            "(nothing was changed)",
        )
    try:
        resolved = Check.model_validate({**body, "name": check.name})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)
        )
        raise TemplateError(
            c.INVALID_CHECK_ARGS, f"{what}, with its arguments filled in, is not a valid check: {problems}"
        ) from err
    if (
        resolved.job
        or resolved.template_ref
        or (resolved.prometheus and resolved.prometheus.bearer_token_secret_ref)
    ):
        raise TemplateError(
            c.INVALID_CHECK_ARGS,
            f"{what}: a template cannot hold a job check, a templateRef or a Secret; put that check in "
            "the set or request itself",
        )
    return resolved
