#!/usr/bin/env bash
# `make demo`: a local Kubernetes with a real node, Prometheus, the flagops operator installed by
# Helm from its image, and the Epic 21 story: a flag goes out, a real Butler process starts with
# it and its error rate rises, a trigger rolls it back, a new process starts with the safe value,
# Prometheus confirms; then the incident record and the drill schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv/bin/python
ns=epic21
run=$root/.cluster/demo
pids=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { "$py" -c 'from flagops_dev.devcluster import free_port; print(free_port())'; }
promql() {  # an instant query, printed as "value"
  curl -s "$prometheus/api/v1/query" --data-urlencode "query=$1" |
    "$py" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "empty")'
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.5
  done
}

step "Control plane, node, images and Prometheus (built or fetched once, then cached)"
eval "$(bash hack/controlplane/build.sh --print-paths | sed -n 's/^\(kubectl\|helm\)=\(.*\)\/[a-z]*$/export PATH=\2:$PATH/p')"
bash hack/prometheus/fetch.sh

step "Local cluster: etcd, kube-apiserver, controller-manager, scheduler; kwok nodes and a real node"
eval "$("$py" -m flagops_dev.devcluster up)"
show kubectl get nodes -o wide
rm -rf "$run" && mkdir -p "$run"
kubectl delete namespace $ns --ignore-not-found --wait=true --timeout=60s >/dev/null
kubectl create namespace $ns >/dev/null

step "The operator: helm install from its image, onto the real node"
metrics_port=$(free_port)
butler_port=$(free_port)
# Values for this cluster: the local image, the host network and loopback (there is no pod
# network), the API server's address; each one a chart value (README "A real node").
"$py" -m flagops_dev.realnode values "$KUBECONFIG" --metrics-port "$metrics_port" >"$run/values.json"
helm uninstall flagops --namespace flagops-system --wait >/dev/null 2>&1 || true  # a rerun's leftover
show helm install flagops charts/flagops --namespace flagops-system --create-namespace \
  --values "$run/values.json" --wait --timeout 180s
show kubectl -n flagops-system get pods -o wide

step "Prometheus, and the Butler service as a real container reading its flags from its environment"
"$py" -m flagops_dev.devcluster prometheus --workdir "$run/prometheus" \
  --target "butler=127.0.0.1:$butler_port,ns=$ns" --target "flagops=127.0.0.1:$metrics_port" \
  >"$run/prometheus.out" 2>&1 &
pids+=($!)
wait_for 60 "Prometheus" grep -q '^http' "$run/prometheus.out"
prometheus=$(grep -m1 '^http' "$run/prometheus.out")
echo "Prometheus at $prometheus, operator metrics at http://127.0.0.1:$metrics_port/metrics"

step "The Epic 21 flags, with a trigger and a Prometheus check on USE_NEW_DIALOG_CONTEXT_REPO"
ratio="sum(rate(butler_dialog_requests_total{outcome=\"error\",ns=\"$ns\"}[5s])) / sum(rate(butler_dialog_requests_total{ns=\"$ns\"}[5s]))"
# workers and api on kwok; butler a real container, on a free port of the host's loopback.
show kubectl -n $ns apply -f examples/epic21/workloads.yaml -l 'app.kubernetes.io/name!=butler'
sed "s/9101/$butler_port/g" examples/butler-sim/deployment.yaml >"$run/butler.yaml"
show kubectl -n $ns apply -f .cluster/demo/butler.yaml
show kubectl -n $ns apply -f examples/epic21/flagset.yaml
"$py" - "$prometheus" "$ratio" <<'PY' >"$run/trigger-patch.json"
import json, sys
server, ratio = sys.argv[1:]
trigger = {"name": "dialog-errors", "prometheus": {"server": server, "query": ratio},
           "comparison": "GreaterThan", "threshold": "0.05", "forSeconds": 5, "intervalSeconds": 1}
check = {"name": "dialog-error-ratio", "initialDelaySeconds": 2, "intervalSeconds": 1, "successes": 3,
         "failureLimit": 10, "deadlineSeconds": 120,
         "prometheus": {"server": server, "query": ratio, "comparison": "LessThan", "threshold": "0.01"}}
print(json.dumps([{"op": "add", "path": "/spec/flags/0/triggers", "value": [trigger]},
                  {"op": "add", "path": "/spec/flags/0/checks", "value": [check]}]))
PY
kubectl -n $ns patch ffs epic21 --type=json --patch-file="$run/trigger-patch.json" >/dev/null
kubectl -n $ns get ffs epic21 -o jsonpath='{.spec.flags[0].triggers[0]}' | "$py" -m json.tool
kubectl -n $ns wait ffs/epic21 --for=condition=Ready --timeout=90s >/dev/null
for d in butler workers api; do kubectl -n $ns rollout status deployment/$d --timeout=90s >/dev/null; done
show kubectl -n $ns get ffs
show kubectl -n $ns get pods -o wide
butler_process() {  # the Butler pod's process: its own words, and as the host sees it
  local pod container
  pod=$(kubectl -n $ns get pods -l app.kubernetes.io/name=butler --field-selector=status.phase=Running \
    -o jsonpath='{.items[0].metadata.name}')
  container=$(kubectl -n $ns get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')
  show kubectl -n $ns logs "$pod"
  echo "pod $pod: $("$py" -m flagops_dev.realnode process "$container" --env USE_NEW_DIALOG_CONTEXT_REPO)"
}
butler_process
before=$(kubectl -n $ns get replicasets -o name | sort)

step "Stage 21_01a: enable USE_NEW_DIALOG_CONTEXT_REPO (consumed by butler only)"
show kubectl -n $ns patch ffs epic21 --type=json \
  -p '[{"op":"replace","path":"/spec/flags/0/enabled","value":true}]'
kubectl -n $ns wait ffs/epic21 --for=jsonpath='{.status.effective.USE_NEW_DIALOG_CONTEXT_REPO}'=true --timeout=60s >/dev/null
kubectl -n $ns wait ffs/epic21 --for=condition=Ready --timeout=90s >/dev/null
show kubectl -n $ns get ffs
echo "New ReplicaSets (only butler restarted):"
comm -13 <(echo "$before") <(kubectl -n $ns get replicasets -o name | sort)
kubectl -n $ns rollout status deployment/butler --timeout=90s >/dev/null
butler_process

step "The new code path fails 8% of dialog requests; the trigger watches the error ratio"
above() { awk -v v="$(promql "$ratio")" 'BEGIN { exit !(v != "empty" && v > 0.05) }'; }
wait_for 60 "the error ratio to rise" above
echo "error ratio now: $(promql "$ratio")"
wait_for 60 "the trigger to fire" sh -c "kubectl -n $ns get rollbacks -o name | grep -q ."
rollback=$(kubectl -n $ns get rollbacks -o jsonpath='{.items[0].metadata.name}')
show kubectl -n $ns get ffs epic21 -o jsonpath='{.status.triggers[0].message}{"\n"}'

step "The trigger created $rollback: flip, restart, validate with Prometheus"
show kubectl -n $ns wait "rollback/$rollback" --for=condition=Succeeded --timeout=180s
butler_process
show kubectl -n $ns get rollbacks
show kubectl -n $ns get rollbacks -o wide
show kubectl -n $ns get ffs
echo "error ratio now: $(promql "$ratio")"
show kubectl -n $ns get rollback "$rollback" -o jsonpath='{range .status.checks[*]}{.name}{": "}{.phase}{" - "}{.target}{"\n  "}{.message}{"\n"}{end}'
show kubectl -n $ns describe rollback "$rollback"

step "The post-incident record: a review once it has ended, then the report"
export PATH=$root/.venv/bin:$PATH   # kubectl finds the kubectl-flagops plugin there
show kubectl -n $ns patch rollback "$rollback" --type=merge --patch-file examples/epic21/review.yaml
show kubectl flagops -n $ns report "$rollback"

step "The plan's drill schedule: a weekly drill per stage, in staging, set up by the tech lead"
# The authority matrix: the cluster admin is none of the plan's initiators, the tech lead is.
kubectl -n $ns apply -f examples/epic21/rbac.yaml >/dev/null
show kubectl -n $ns apply -f examples/epic21/drills.yaml 2>&1 | head -2 || true
show kubectl -n $ns --as=dana --as-group=ep21-tech-lead apply -f examples/epic21/drills.yaml
for d in stage-21-01a stage-21-01b stage-21-01c stage-21-01d; do
  wait_for 30 "drill $d scheduled" sh -c "kubectl -n $ns get rollbackdrill $d -o jsonpath='{.status.nextRunAt}' | grep -q ."
done
show kubectl -n $ns get drills

step "The operator's own metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -s "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^flagops_(rollbacks_total|rollback_duration_seconds_(sum|count)|trigger_firings_total|flags|notifications_total|rollouts_in_progress)' || true

step "Done. The cluster, the operator and the Butler pod keep running (Prometheus stops with this script):"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  make cluster-down    # stops it"
