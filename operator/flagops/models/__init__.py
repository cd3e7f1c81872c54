"""The API types: the single source of truth of the CRD schemas (see flagops.crdgen)."""
