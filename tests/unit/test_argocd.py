"""The Argo CD health checks and resource actions, run by a real Lua interpreter on their testdata,
as Argo CD runs them (its health_test.yaml and actions/action_test.yaml layout)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from flagops.models.rollback import Phase
from flagops.plugin import lint

CUSTOMIZATIONS = Path(__file__).resolve().parents[2] / "argocd" / "resource_customizations" / "flagops.io"
CASES = [
    (kind.name, test)
    for kind in sorted(CUSTOMIZATIONS.iterdir())
    for test in yaml.safe_load((kind / "health_test.yaml").read_text())["tests"]
]


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    """YAML data as Lua tables (lists 1-based), as Argo CD hands `obj` to the script."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def from_lua(value: Any) -> Any:
    """A Lua result as YAML data: a table with keys 1..n is a list, as Argo CD reads it."""
    if not hasattr(value, "items"):
        return value
    items = dict(value.items())
    if items and all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
        return [from_lua(items[i]) for i in range(1, len(items) + 1)]
    return {k: from_lua(v) for k, v in items.items()}


def run_script(path: Path, obj: dict[str, Any]) -> Any:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    return from_lua(lua.execute(path.read_text()))


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    result = run_script(CUSTOMIZATIONS / kind / "health.lua", obj)
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}-{Path(c['inputPath']).stem}" for k, c in CASES])
def test_health(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CUSTOMIZATIONS / kind / case["inputPath"]).read_text())
    assert health(kind, obj) == case["healthStatus"]


def test_every_phase_has_a_health() -> None:
    covered = {
        yaml.safe_load((CUSTOMIZATIONS / "RollbackRequest" / c["inputPath"]).read_text())
        .get("status", {})
        .get("phase")
        for k, c in CASES
        if k == "RollbackRequest"
    }
    # Pending is the phase of a request with no status yet: the "new" case.
    assert {str(p) for p in Phase} - {"Pending"} <= covered
    assert None in covered
    assert {"Progressing", "Suspended", "Healthy", "Degraded"} == {
        c["healthStatus"]["status"] for k, c in CASES if k == "RollbackRequest"
    }


# -- resource actions -----------------------------------------------------------------------

ACTION_TESTS = {
    kind.name: yaml.safe_load((kind / "actions" / "action_test.yaml").read_text())
    for kind in sorted(CUSTOMIZATIONS.iterdir())
    if (kind / "actions").is_dir()
}
DISCOVERY_CASES = [(kind, case) for kind, tests in ACTION_TESTS.items() for case in tests["discoveryTests"]]
ACTION_CASES = [(kind, case) for kind, tests in ACTION_TESTS.items() for case in tests["actionTests"]]


def actions_dir(kind: str) -> Path:
    return CUSTOMIZATIONS / kind / "actions"


@pytest.mark.parametrize(
    ("kind", "case"), DISCOVERY_CASES, ids=[f"{k}-{Path(c['inputPath']).stem}" for k, c in DISCOVERY_CASES]
)
def test_action_discovery(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((actions_dir(kind) / case["inputPath"]).read_text())
    offered = run_script(actions_dir(kind) / "discovery.lua", obj)
    assert {name: bool(spec["disabled"]) for name, spec in offered.items()} == {
        item["name"]: item["disabled"] for item in case["result"]
    }
    # Every action offered has its script.
    assert all((actions_dir(kind) / name / "action.lua").is_file() for name in offered)


def normalized(result: Any) -> Any:
    """Argo CD's impacted-resources form; a generated name's timestamp zeroed."""
    if isinstance(result, list):
        return [
            {
                "k8sOperation": item["operation"],
                "unstructuredObj": {
                    **item["resource"],
                    "metadata": {
                        **item["resource"]["metadata"],
                        "name": re.sub(
                            r"-[0-9]{8}-[0-9]{6}$", "-00000000-000000", item["resource"]["metadata"]["name"]
                        ),
                    },
                },
            }
            for item in result
        ]
    return result


@pytest.mark.parametrize(("kind", "case"), ACTION_CASES, ids=[f"{k}-{c['action']}" for k, c in ACTION_CASES])
def test_action(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((actions_dir(kind) / case["inputPath"]).read_text())
    result = run_script(actions_dir(kind) / case["action"] / "action.lua", obj)
    expected = yaml.safe_load((actions_dir(kind) / case["expectedOutputPath"]).read_text())
    assert normalized(result) == expected


def test_every_action_is_tested() -> None:
    for kind, tests in ACTION_TESTS.items():
        scripts = {p.parent.name for p in actions_dir(kind).glob("*/action.lua")}
        assert scripts == {case["action"] for case in tests["actionTests"]}, kind


def test_the_emergency_rollback_action_creates_a_request_the_api_server_admits() -> None:
    """What the action creates passes the same validation as the API server (kubectl flagops lint)."""
    obj = yaml.safe_load((actions_dir("FeatureFlagSet") / "testdata" / "flagset.yaml").read_text())
    (created,) = run_script(actions_dir("FeatureFlagSet") / "emergency-rollback" / "action.lua", obj)
    assert lint.check_object(created["resource"], "action") is None
    assert re.fullmatch(r"epic21-emergency-[0-9]{8}-[0-9]{6}", created["resource"]["metadata"]["name"])


def test_argocd_cm_patch_carries_every_script_verbatim() -> None:
    """argocd/argocd-cm.yaml (what users patch into argocd-cm) is rendered from these files."""
    root = CUSTOMIZATIONS.parents[2]
    check = subprocess.run(
        [sys.executable, str(root / "hack/render-argocd-cm.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    data = yaml.safe_load((root / "argocd" / "argocd-cm.yaml").read_text())["data"]
    for kind in sorted(p for p in CUSTOMIZATIONS.iterdir() if p.is_dir()):
        assert (
            data[f"resource.customizations.health.flagops.io_{kind.name}"]
            == (kind / "health.lua").read_text()
        )
        actions_dir = kind / "actions"
        if not actions_dir.is_dir():
            continue
        actions = yaml.safe_load(data[f"resource.customizations.actions.flagops.io_{kind.name}"])
        assert actions["discovery.lua"] == (actions_dir / "discovery.lua").read_text()
        on_disk = {
            p.name: (p / "action.lua").read_text()
            for p in actions_dir.iterdir()
            if (p / "action.lua").exists()
        }
        assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == on_disk
    for workload in ("Deployment", "StatefulSet", "DaemonSet"):
        ignore = yaml.safe_load(data[f"resource.customizations.ignoreDifferences.apps_{workload}"])
        assert ignore == {
            "jqPathExpressions": [
                '.spec.template.metadata.annotations."flagops.io/flags-hash"',
                '.spec.template.metadata.annotations."flagops.io/flagset"',
                ".spec.template.metadata.annotations | select(. != null and "
                '([keys[] | select(startswith("flagops.io/") | not)] | length) == 0)',
            ]
        }
