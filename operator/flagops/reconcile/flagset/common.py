"""Names and hashing shared by the FeatureFlagSet decisions."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

HASH_ANNOTATION: Final = "flagops.io/flags-hash"
SET_ANNOTATION: Final = "flagops.io/flagset"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "flagops"}
FLAGS_JSON: Final = "flags.json"
FLAGD_JSON: Final = "flagd.json"
FLAGD_SCHEMA: Final = "https://flagd.dev/schema/v0/flags.json"


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, so a hash never depends on layout."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
