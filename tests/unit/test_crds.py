"""The committed CRDs are what the models generate, and every field explains itself."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from flagops import crdgen


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.stale()
    assert stale == [], f"stale CRDs {stale}: run `flagops crds` (or `make crds`) and commit the result"


def _fields_without_description(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(where)
        missing += _fields_without_description(sub, where)
        if "items" in sub:
            missing += _fields_without_description(sub["items"], f"{where}[]")
    return missing


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description(kind: crdgen.Kind) -> None:
    schema = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _fields_without_description(schema, kind.kind) == []


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: crdgen.Kind) -> None:
    text = crdgen.render(kind)
    for forbidden in ("$ref", "$defs", "anyOf: null", "title:", "additionalProperties: false"):
        assert forbidden not in text
    doc = yaml.safe_load(text)
    version = doc["spec"]["versions"][0]
    # Templates are read when a request is planned; they have no status to write.
    assert version["subresources"] == ({"status": {}} if kind.status is not None else {})
    assert doc["spec"]["names"]["categories"] == ["flagops"]


def test_featureflagset_names_and_columns() -> None:
    doc = crdgen.crd(crdgen.FEATURE_FLAG_SET)
    assert doc["spec"]["names"]["shortNames"] == ["ffs", "flagset"]
    columns = [
        c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in c
    ]
    assert columns == ["Flags", "Enabled", "Overrides", "Ready", "Age"]
