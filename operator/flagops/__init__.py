"""flagops: feature flags and validated, timed rollbacks as Kubernetes custom resources."""
