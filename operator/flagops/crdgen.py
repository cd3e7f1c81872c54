"""Generates the CustomResourceDefinitions from the pydantic models.

The models are the single source of truth (as kubebuilder's types are): this module turns
their JSON Schema into structural OpenAPI v3 (refs inlined, Optional as nullable, no
titles), adds the Kubernetes extensions the models carry, and writes crds/*.yaml and the
Helm chart's copy. `flagops crds --check` fails when the committed files are stale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, JsonValue

from flagops.models import common, drill, flagset, rollback, templates

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIRS = (REPO_ROOT / "crds", REPO_ROOT / "charts" / "flagops" / "crds")

# JSON Schema keywords a structural schema cannot carry, or that only confuse kubectl explain.
_DROP = {"title", "$defs", "additionalProperties_false"}


@dataclass(frozen=True)
class Printer:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_api(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel] | None
    description: str
    printers: tuple[Printer, ...]
    spec_validations: tuple[dict[str, JsonValue], ...] = field(default=())
    root_validations: tuple[dict[str, JsonValue], ...] = field(default=())
    scope: str = "Namespaced"
    categories: tuple[str, ...] = ("flagops",)

    @property
    def name(self) -> str:
        return f"{self.plural}.{common.GROUP}"


FEATURE_FLAG_SET = Kind(
    kind="FeatureFlagSet",
    plural="featureflagsets",
    singular="featureflagset",
    short_names=("ffs", "flagset"),
    spec=flagset.FeatureFlagSetSpec,
    status=flagset.FeatureFlagSetStatus,
    description="A set of feature flags, served to workloads through a ConfigMap that flagops "
    "writes; workloads that consume a changed flag get a rolling restart.",
    printers=(
        Printer("Flags", ".status.flagCount", "integer", "Number of flags"),
        Printer("Enabled", ".status.enabledCount", "integer", "Flags served as enabled"),
        Printer("Overrides", ".status.overrideCount", "integer", "Flags held by rollbacks"),
        Printer("Ready", '.status.conditions[?(@.type=="Ready")].status', "string", "Applied and rolled out"),
        Printer("Age", ".metadata.creationTimestamp", "date"),
        Printer(
            "Reason", '.status.conditions[?(@.type=="Ready")].reason', "string", "Why Ready is what it is", 1
        ),
    ),
)

ROLLBACK_REQUEST = Kind(
    kind="RollbackRequest",
    plural="rollbackrequests",
    singular="rollbackrequest",
    short_names=("rollback", "rollbacks", "rbr"),
    spec=rollback.RollbackRequestSpec,
    status=rollback.RollbackRequestStatus,
    description="A request to roll flags of a FeatureFlagSet back to their safe values: flagops applies "
    "it, restarts what the flags affect, validates the recovery and records phases and timings.",
    printers=(
        Printer("FlagSet", ".spec.flagSet", "string", "The FeatureFlagSet"),
        Printer("Phase", ".status.phase", "string", "Where the request is"),
        Printer("Flags", ".status.flagsSummary", "string", "Flags rolled back"),
        Printer("Execute", ".status.durations.timeToExecute", "string", "Go-ahead to restarts done"),
        Printer("Validate", ".status.durations.timeToValidate", "string", "Restarts done to checks passed"),
        Printer("Age", ".metadata.creationTimestamp", "date"),
        Printer("Emergency", ".spec.emergency", "boolean", "Approval gate skipped", 1),
        Printer("DryRun", ".spec.dryRun", "boolean", "Plan only", 1),
        Printer("Incident", ".spec.incident", "string", "Incident reference", 1),
        Printer("Message", ".status.message", "string", "Last news", 1),
    ),
    spec_validations=rollback.SPEC_VALIDATIONS,
    root_validations=rollback.ROOT_VALIDATIONS,
)

ROLLBACK_DRILL = Kind(
    kind="RollbackDrill",
    plural="rollbackdrills",
    singular="rollbackdrill",
    short_names=("drill", "drills"),
    spec=drill.RollbackDrillSpec,
    status=drill.RollbackDrillStatus,
    description="The plan's drill schedule: at each due time flagops runs one drill RollbackRequest "
    "(roll back, validate, restore) and records its outcome against the plan's timing targets.",
    printers=(
        Printer("Stage", ".spec.stage", "string", "The plan's stage"),
        Printer("FlagSet", ".spec.flagSet", "string", "The FeatureFlagSet drilled"),
        Printer("Owner", ".spec.owner", "string", "Who owns the drill"),
        # Timestamps, not ages: kubectl prints a date column in the future as <invalid>.
        Printer("Next", ".status.nextRunAt", "string", "When the next drill is due"),
        Printer("Last", ".status.lastRunAt", "string", "The due time of the last drill"),
        Printer("Status", ".status.state", "string", "Scheduled, Running, or the last drill's outcome"),
        Printer("Schedule", ".spec.schedule", "string", "Cron schedule", 1),
        Printer("Request", ".status.lastRequest", "string", "The last drill's RollbackRequest", 1),
        Printer("Message", ".status.message", "string", "What happened last", 1),
    ),
    spec_validations=drill.SPEC_VALIDATIONS,
)


def _check_template(kind: str, plural: str, short: str, scope: str, where: str) -> Kind:
    return Kind(
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        short_names=(short,),
        spec=templates.CheckTemplateSpec,
        status=None,
        description=f"A check defined once, with declared arguments, for flags and requests {where} to use "
        "through templateRef and args; resolved into a request's plan when it is planned.",
        printers=(
            Printer("Args", ".spec.args[*].name", "string", "The template's arguments"),
            Printer("Age", ".metadata.creationTimestamp", "date"),
        ),
        scope=scope,
    )


CHECK_TEMPLATE = _check_template("CheckTemplate", "checktemplates", "ct", "Namespaced", "of its namespace")
CLUSTER_CHECK_TEMPLATE = _check_template(
    "ClusterCheckTemplate", "clusterchecktemplates", "cct", "Cluster", "of any namespace"
)

KINDS: tuple[Kind, ...] = (
    FEATURE_FLAG_SET,
    ROLLBACK_REQUEST,
    ROLLBACK_DRILL,
    CHECK_TEMPLATE,
    CLUSTER_CHECK_TEMPLATE,
)


def _nullable(node: dict[str, Any], walk: Callable[[Any], Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` (pydantic's Optional) becomes X with `nullable: true`."""
    any_of = node.get("anyOf")
    if not any_of or not any(option == {"type": "null"} for option in any_of):
        return node
    rest = [option for option in any_of if option != {"type": "null"}]
    node.pop("anyOf")
    if len(rest) == 1:
        node = {**walk(rest[0]), **{k: v for k, v in node.items() if k != "default" or v is not None}}
    else:
        node["anyOf"] = rest
    node["nullable"] = True
    if node.get("default", 0) is None:
        node.pop("default")
    return node


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline $refs, turn `anyOf: [X, null]` into nullable X, drop what CRDs reject."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node:
            target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
            # Field-level siblings (description, default, extensions) win over the model's.
            node = {**target, **node}
        node = _nullable(node, walk)
        if "const" in node:
            node["enum"] = [node.pop("const")]
        for key in ("title", "$defs"):
            node.pop(key, None)
        if node.get("additionalProperties") is False:
            node.pop("additionalProperties")
        if node.get("additionalProperties") is True:
            # dict[str, Any]: free-form; structural schemas say so with preserve-unknown-fields.
            node.pop("additionalProperties")
            node["x-kubernetes-preserve-unknown-fields"] = True
        if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            # A free-form object: keep what is written (the API server would prune it all).
            node["x-kubernetes-preserve-unknown-fields"] = True
        if "required" in node and not node["required"]:
            node.pop("required")
        return {
            key: (walk(value) if key in ("properties", "items", "additionalProperties") else value)
            if key != "properties"
            else {name: walk(sub) for name, sub in value.items()}
            for key, value in node.items()
        }

    return walk({k: v for k, v in schema.items() if k != "$defs"})  # type: ignore[no-any-return]


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def crd(kind: Kind) -> dict[str, Any]:
    spec = model_schema(kind.spec)
    spec["description"] = f"Desired state of the {kind.kind}."
    if kind.spec_validations:
        spec["x-kubernetes-validations"] = list(kind.spec_validations)
    schema: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
        },
        "required": ["spec"],
    }
    if kind.status is not None:
        status = model_schema(kind.status)
        status["description"] = f"Observed state of the {kind.kind}, written by flagops."
        # The operator writes status whole; a stale field from an older version is dropped, not kept.
        schema["properties"]["status"] = status
    if kind.root_validations:
        schema["x-kubernetes-validations"] = list(kind.root_validations)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": {"app.kubernetes.io/part-of": "flagops"}},
        "spec": {
            "group": common.GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [
                {
                    "name": common.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}} if kind.status is not None else {},
                    "additionalPrinterColumns": [p.to_api() for p in kind.printers],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = "# Generated by `flagops crds` from operator/flagops/models; do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def write(dirs: tuple[Path, ...] = OUTPUT_DIRS) -> list[Path]:
    written = []
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            path = directory / f"{kind.name}.yaml"
            path.write_text(render(kind))
            written.append(path)
    return written


def stale(dirs: tuple[Path, ...] = OUTPUT_DIRS) -> list[Path]:
    """Committed CRD files that differ from what the models generate."""
    return [
        directory / f"{kind.name}.yaml"
        for directory in dirs
        for kind in KINDS
        if not (directory / f"{kind.name}.yaml").exists()
        or (directory / f"{kind.name}.yaml").read_text() != render(kind)
    ]
