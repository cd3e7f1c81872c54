"""Probes: how each kind of check takes one measurement (the I/O side of a check).

The policy (interval, successes, failure limit, deadline) is the same for every kind and
lives in flagops.reconcile.rollback.record; probes.py has one probe per kind, behind one protocol.
"""


class ProbeError(Exception):
    """A value could not be read; the message says why (and never carries a secret)."""


class Refused(ProbeError):
    """The measurement may not be taken at all; it fails the check at once, with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
