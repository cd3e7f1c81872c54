"""Probes: how each kind of check takes one measurement (the I/O side of a check).

The policy (interval, successes, failure limit, deadline) is the same for every kind and
lives in flagops.reconcile.rollback.record; a new kind only adds a probe here.
"""


class ProbeError(Exception):
    """A value could not be read; the message says why (and never carries a secret)."""
