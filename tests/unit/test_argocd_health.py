"""The Argo CD health checks, run by a real Lua interpreter on their testdata, as Argo CD does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from flagops.models.rollback import Phase

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


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute((CUSTOMIZATIONS / kind / "health.lua").read_text())
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
