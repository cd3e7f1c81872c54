#!/usr/bin/env bash
# `make demo`: the local control plane, then a Deployment rolling out on it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Control plane binaries (built once, then cached)"
eval "$(bash hack/controlplane/build.sh --print-paths | sed -n 's/^kubectl=\(.*\)\/kubectl$/export PATH=\1:$PATH/p')"

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
eval "$($py -m flagops.devcluster up)"
echo "KUBECONFIG=$KUBECONFIG"
kubectl get nodes -o wide

step "A 2-replica Deployment"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: butler}
spec:
  replicas: 2
  selector: {matchLabels: {app: butler}}
  template:
    metadata: {labels: {app: butler}}
    spec:
      containers: [{name: butler, image: registry.invalid/butler:1}]
YAML
kubectl -n demo rollout status deployment/butler --timeout=90s

step "kubectl rollout restart: a new ReplicaSet replaces the old one"
kubectl -n demo rollout restart deployment/butler
kubectl -n demo rollout status deployment/butler --timeout=90s
kubectl -n demo get replicasets,pods -o wide

step "Done. The cluster keeps running:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  make cluster-down    # stops it"
