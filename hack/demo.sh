#!/usr/bin/env bash
# `make demo`: the local control plane, the flagops operator, and the Epic 21 flags at work.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv/bin/python
ns=epic21

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Control plane binaries (built once, then cached)"
eval "$(bash hack/controlplane/build.sh --print-paths | sed -n 's/^kubectl=\(.*\)\/kubectl$/export PATH=\1:$PATH/p')"

step "Local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok"
eval "$($py -m flagops.devcluster up)"
show kubectl get nodes

step "Install the CRDs and start the operator (log: .cluster/operator.log)"
show kubectl apply -f crds/
kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=flagops >/dev/null
"$py" -m flagops.cli run --metrics-port 0 >>.cluster/operator.log 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null; wait $operator 2>/dev/null || true' EXIT

step "The Epic 21 flags and the three services that consume them"
# A fresh namespace each run, so the demo tells the same story every time.
kubectl delete namespace $ns --ignore-not-found --wait=true --timeout=60s >/dev/null
kubectl create namespace $ns >/dev/null
show kubectl -n $ns apply -f examples/epic21/flagset.yaml -f examples/epic21/workloads.yaml
kubectl -n $ns wait ffs/epic21 --for=condition=Ready --timeout=90s >/dev/null
for d in butler workers api; do kubectl -n $ns rollout status deployment/$d --timeout=90s >/dev/null; done
show kubectl -n $ns get ffs
show kubectl -n $ns get configmap epic21-flags -o jsonpath='{.data.USE_NEW_DIALOG_CONTEXT_REPO}{"\n"}'
before=$(kubectl -n $ns get replicasets -o name | sort)

step "Stage 21_01a: enable USE_NEW_DIALOG_CONTEXT_REPO (consumed by butler only)"
show kubectl -n $ns patch ffs epic21 --type=json \
  -p '[{"op":"replace","path":"/spec/flags/0/enabled","value":true}]'
kubectl -n $ns wait ffs/epic21 --for=jsonpath='{.status.effective.USE_NEW_DIALOG_CONTEXT_REPO}'=true --timeout=60s >/dev/null
kubectl -n $ns wait ffs/epic21 --for=condition=Ready --timeout=90s >/dev/null
show kubectl -n $ns get ffs
show kubectl -n $ns get configmap epic21-flags -o jsonpath='{.data.USE_NEW_DIALOG_CONTEXT_REPO}{"\n"}'
echo "New ReplicaSets (only butler restarted):"
comm -13 <(echo "$before") <(kubectl -n $ns get replicasets -o name | sort)
show kubectl -n $ns get deployments
show kubectl -n $ns get ffs epic21 -o jsonpath='{range .status.workloads[*]}{.name}{"\t"}{.state}{"\t"}{.restartedAt}{"\n"}{end}'

step "Incident: dialog errors above 5%. Roll back stage 21_01a (examples/epic21/rollback-21-01a.yaml)"
show kubectl -n $ns apply -f examples/epic21/rollback-21-01a.yaml
show kubectl -n $ns wait rollback/rollback-21-01a --for=condition=Succeeded --timeout=120s
show kubectl -n $ns get rollbacks
show kubectl -n $ns get rollbacks -o wide
show kubectl -n $ns get ffs
show kubectl -n $ns get configmap epic21-flags -o jsonpath='{.data.USE_NEW_DIALOG_CONTEXT_REPO}{"\n"}'
show kubectl -n $ns describe rollback rollback-21-01a

step "Done. The cluster keeps running (the operator stops with this script):"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  make cluster-down    # stops it"
