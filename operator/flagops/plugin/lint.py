"""`kubectl flagops lint`: the API server's validation of FeatureFlagSets and RollbackRequests,
offline, for CI pipelines and pre-commit hooks of GitOps repositories.

The schema is the CRD that `flagops crds` generates from the models, and the messages are
the API server's own, word for word: the same structural checks (types, patterns, bounds,
enums, required fields, list keys), the same defaults, then the CEL rules, evaluated by a
CEL interpreter; the API server skips CEL when an error would make it unsafe, and so does
this. Transition rules (those reading `oldSelf`) need the stored object and are left to the
API server. On top, what the API server admits but the operator would refuse is reported as
the condition it would set: a set's dependency cycle or an enabled flag whose prerequisite is
off, a drill's schedule or time zone it cannot read.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from flagops import crdgen
from flagops.models.common import GROUP, VERSION
from flagops.models.drill import RollbackDrillSpec
from flagops.models.flagset import FeatureFlagSetSpec
from flagops.reconcile.drills import Schedule
from flagops.reconcile.flagset.values import resolve
from flagops.reconcile.flagset.windows import validate_windows

API_VERSION = f"{GROUP}/{VERSION}"
# The errors after which the API server does not run CEL rules (apiextensions' hasBlockingErr).
BLOCKING = ("Unsupported value", "Required value", "Too long", "Too many", "must be of type")
NOT_CHECKED = (
    "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class Problem:
    """One document's problems, each line as the API server would print it."""

    source: str
    kind: str
    name: str
    errors: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = "\n".join(f"* {error}" for error in self.errors)
        return f'{self.source}: {self.kind} "{self.name}" is invalid:\n{lines}'


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    return {
        kind.kind: crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for kind in crdgen.KINDS
    }


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_type(value: Any, type_: str) -> bool:
    return type_ == _go_type(value) or (type_ == "number" and _go_type(value) == "integer")


def _quoted(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _date_time(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value or " " in value


@dataclass
class _Rule:
    path: str
    rule: dict[str, Any]
    value: Any


class _Validator:
    """One object against one structural schema, errors in the API server's words."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.rules: list[_Rule] = []

    def walk(self, schema: dict[str, Any], value: Any, path: str) -> Any:
        """Validate; return the value with defaults applied (as the API server stores it)."""
        type_ = schema.get("type")
        if type_ and not _is_type(value, type_):
            got = _go_type(value)
            self.errors.append(
                f'{path}: Invalid value: "{got}": {path} in body must be of type {type_}: "{got}"'
            )
            return value
        if isinstance(value, str):
            self._string(schema, value, path)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self._number(schema, value, path)
        elif isinstance(value, list):
            value = self._array(schema, value, path)
        elif isinstance(value, dict):
            value = self._object(schema, value, path)
        # Rules see the value as stored: defaults applied.
        self.rules.extend(_Rule(path, rule, value) for rule in schema.get("x-kubernetes-validations", []))
        return value

    def _string(self, schema: dict[str, Any], value: str, path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_quoted(v) for v in schema["enum"])
            self.errors.append(f"{path}: Unsupported value: {_quoted(value)}: supported values: {supported}")
            return
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.errors.append(
                f"{path}: Invalid value: {_quoted(value)}: {path} in body should be at least "
                f"{schema['minLength']} chars long"
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            self.errors.append(
                f"{path}: Invalid value: {_quoted(value)}: {path} in body should match '{schema['pattern']}'"
            )
        if schema.get("format") == "date-time" and not _date_time(value):
            self.errors.append(
                f"{path}: Invalid value: {_quoted(value)}: {path} in body must be of type date-time: "
                f"{_quoted(value)}"
            )

    def _number(self, schema: dict[str, Any], value: float, path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_quoted(v) for v in schema["enum"])
            self.errors.append(f"{path}: Unsupported value: {_quoted(value)}: supported values: {supported}")
        if "minimum" in schema and value < schema["minimum"]:
            self.errors.append(
                f"{path}: Invalid value: {_number(value)}: {path} in body should be greater than or equal "
                f"to {_number(schema['minimum'])}"
            )
        if "maximum" in schema and value > schema["maximum"]:
            self.errors.append(
                f"{path}: Invalid value: {_number(value)}: {path} in body should be less than or equal "
                f"to {_number(schema['maximum'])}"
            )

    def _array(self, schema: dict[str, Any], value: list[Any], path: str) -> list[Any]:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.errors.append(
                f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
            )
            return value
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.errors.append(
                f"{path}: Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minItems']} items"
            )
        items = schema.get("items", {})
        result = [self.walk(items, item, f"{path}[{i}]") for i, item in enumerate(value)]
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[str] = set()
        for i, item in enumerate(result):
            if list_type == "set":
                identity = _quoted(item)
            elif list_type == "map" and isinstance(item, dict):
                identity = _quoted({key: item.get(key) for key in keys})
            else:
                continue
            if identity in seen:
                self.errors.append(f"{path}[{i}]: Duplicate value: {identity}")
            seen.add(identity)
        return result

    def _object(self, schema: dict[str, Any], value: dict[str, Any], path: str) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        result = dict(value)
        for name, sub in properties.items():
            if result.get(name) is None and not sub.get("nullable"):
                result.pop(name, None)  # the API server prunes a null it may not store
            if name not in result and "default" in sub:
                result[name] = sub["default"]
        for name in schema.get("required", []):
            if name not in result:
                self.errors.append(f"{path}.{name}: Required value")
        for name, item in list(result.items()):
            if name in properties:
                if item is not None:
                    result[name] = self.walk(properties[name], item, f"{path}.{name}")
            elif isinstance(additional, dict):
                result[name] = self.walk(additional, item, f"{path}[{name}]")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                self.errors.append(f'{path}.{name}: unknown field "{path}.{name}" (not in the schema)')
        return result


def _cel_errors(rules: list[_Rule]) -> Iterator[str]:
    env = celpy.Environment()
    for item in rules:
        rule = item.rule
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: it needs the stored object
        activation = {"self": json_to_cel(item.value)}
        path = item.path + str(rule.get("fieldPath", ""))
        try:
            passed = env.program(env.compile(rule["rule"])).evaluate(activation)
        except (CELParseError, CELEvalError) as err:
            yield f"{path}: Invalid value: {_go_type(item.value)}: rule {rule['rule']!r} could not run: {err}"
            continue
        if isinstance(passed, CELEvalError):
            yield f"{path}: Invalid value: {_go_type(item.value)}: {passed}"
            continue
        if bool(passed):
            continue
        message = str(rule.get("message") or f"failed rule: {rule['rule']}")
        if rule.get("messageExpression"):
            with contextlib.suppress(CELParseError, CELEvalError):
                message = str(env.program(env.compile(rule["messageExpression"])).evaluate(activation))
        label = "Forbidden" if rule.get("reason") == "FieldValueForbidden" else "Invalid value"
        yield f"{path}: {label}: {message}"


def _degraded(spec: dict[str, Any]) -> list[str]:
    """What the API server admits but would make the set Degraded, as the operator words it."""
    try:
        parsed = FeatureFlagSetSpec.model_validate(spec)
        validate_windows(parsed.rollout.windows)
    except ValidationError as err:  # what the schema cannot say: a value of the wrong type
        return [
            f"spec.flags: InvalidSpec: {str(e['msg']).removeprefix('Value error, ')}" for e in err.errors()
        ]
    except ValueError as err:
        return [f"spec.rollout.windows: InvalidSpec: {err}"]
    resolution = resolve(parsed)
    if resolution.cycle:
        return [f"spec.flags: DependencyCycle: {resolution.blocked[resolution.cycle[0]]}"]
    return [f"spec.flags: PrerequisiteDisabled: {why}" for why in resolution.blocked.values()]


def _unschedulable(spec: dict[str, Any]) -> list[str]:
    """A schedule the API server admits but the operator cannot run, as the operator words it."""
    try:
        Schedule.of(RollbackDrillSpec.model_validate(spec))
    except ValidationError as err:
        return [f"spec: Invalid value: {err.errors()[0]['msg']}"]
    except ValueError as err:
        return [f"spec.schedule: InvalidSchedule: {err}"]
    return []


def check_object(obj: Any, source: str) -> Problem | None:
    """One document; None when it is not ours or has nothing to report."""
    if not isinstance(obj, dict):
        return None
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind not in _schemas() or not str(api_version or "").startswith(f"{GROUP}/"):
        return None
    metadata: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    problem = Problem(source, str(kind), name)
    if api_version != API_VERSION:
        problem.errors.append(
            f'apiVersion: no matches for kind "{kind}" in version "{api_version}": use {API_VERSION}'
        )
        return problem
    if not name:
        problem.errors.append("metadata.name: Required value: name or generateName is required")
    elif metadata.get("name") and not _DNS_SUBDOMAIN.match(name):
        problem.errors.append(
            f"metadata.name: Invalid value: {_quoted(name)}: a lowercase RFC 1123 subdomain must consist of "
            "lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character"
        )
    schema = _schemas()[str(kind)]
    validator = _Validator()
    defaulted = validator.walk(schema["properties"]["spec"], obj.get("spec") if "spec" in obj else {}, "spec")
    if "spec" not in obj:
        validator.errors.insert(0, "spec: Required value")
    errors = list(validator.errors)
    if any(marker in error for error in errors for marker in BLOCKING):
        errors.append(NOT_CHECKED)
    else:
        errors += _cel_errors(validator.rules)
    if not errors and kind == "FeatureFlagSet":
        errors += _degraded(defaulted)
    if not errors and kind == "RollbackDrill":
        errors += _unschedulable(defaulted)
    problem.errors += errors
    return problem if problem.errors else None


def check_text(text: str, source: str) -> tuple[list[Problem], int]:
    """The problems of a YAML or JSON stream, and how many of its documents are ours."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        return [Problem(source, "YAML", source, [f"cannot be parsed: {err}"])], 0
    ours = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") in _schemas()]
    found = (
        check_object(doc, f"{source} (document {i + 1})" if len(documents) > 1 else source)
        for i, doc in enumerate(documents)
    )
    return [problem for problem in found if problem is not None], len(ours)


def check_paths(paths: list[str]) -> tuple[list[Problem], int]:
    """Problems, and how many of our objects were read; a directory is read recursively, - is stdin."""
    problems: list[Problem] = []
    seen = 0
    for name in paths:
        path = Path(name)
        if name == "-":
            found, count = check_text(sys.stdin.read(), "<stdin>")
            problems += found
            seen += count
            continue
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                text = file.read_text()
            except OSError as err:
                problems.append(Problem(str(file), "File", str(file), [f"cannot be read: {err.strerror}"]))
                continue
            found, count = check_text(text, str(file))
            problems += found
            seen += count
    return problems, seen
