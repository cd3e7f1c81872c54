"""Loaded by an operator process started with this folder on PYTHONPATH (test_locks.py): a
fault that no real part produces on demand, an unexpected error in every pass that measures
a check named `boom`."""

from flagops.reconcile import rollback

_record = rollback.record


def _faulty_record(check, result, measurement, now):  # type: ignore[no-untyped-def]
    if check.name == "boom":
        raise RuntimeError("injected fault while recording a measurement of check boom")
    return _record(check, result, measurement, now)


rollback.record = _faulty_record
