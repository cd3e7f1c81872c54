"""`kubectl flagops`, the command line an on-call engineer drives flags and rollbacks with.

`main` parses and dispatches, `view` draws (pure), `lint` validates offline.
"""
