"""flagops' development harness: the local control plane, Prometheus, ServiceAccount kubeconfigs.

Installed only in the development virtualenv (`make venv`); neither `pip install .` nor the
image carries it, nor its dependency on `cryptography`.
"""
