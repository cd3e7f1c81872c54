#!/usr/bin/env bash
# `make demo-gitops`: flagops driven by a real Argo CD (v3.2.11, built from the Go module proxy)
# from a git repository on loopback. The Epic 21 set and workloads are synced from Git; an
# emergency rollback started through Argo CD holds the flags Git says are on while the
# Application stays Synced; a rollback committed to Git waits for approval (Suspended in Argo
# CD), is approved through Argo CD's action, and holds (Healthy).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv/bin/python
ns=epic21
run=$root/.cluster/demo-gitops
pids=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.5
  done
}
health_of() {  # health_of KIND NAME: the resource's health as the Application reports it
  kubectl -n argocd get application $ns -o json | "$py" -c '
import json, sys
app, kind, name = json.load(sys.stdin), sys.argv[1], sys.argv[2]
print(next((r.get("health", {}).get("status", "") for r in app.get("status", {}).get("resources", [])
            if r["kind"] == kind and r["name"] == name), ""))' "$1" "$2"
}
health_is() { [ "$(health_of "$1" "$2")" = "$3" ]; }
commit() {  # commit MESSAGE: commit the work tree and push it to the git server
  git -C "$WORKTREE" add --all
  git -C "$WORKTREE" -c user.name="Epic 21 tech lead" -c user.email=ep21@example.invalid commit --quiet -m "$1"
  git -C "$WORKTREE" push --quiet origin HEAD:main
  git -C "$WORKTREE" log --oneline -1
}

step "Control plane and Argo CD (built once, then cached; a cold Argo CD build takes about 6 minutes)"
eval "$(bash hack/controlplane/build.sh --print-paths | sed -n 's/^\(kubectl\)=\(.*\)\/[a-z]*$/export PATH=\2:$PATH/p')"
argocd_bin=$(bash hack/argocd/build.sh --print-paths | sed -n 's/^argocd=//p')
argocd() { "$argocd_bin" --config "$ARGOCD_CONFIG" "$@"; }
export PATH=$root/.venv/bin:$PATH   # kubectl finds the kubectl-flagops plugin there

step "Local cluster"
eval "$("$py" -m flagops_dev.devcluster up)"
rm -rf "$run" && mkdir -p "$run"
kubectl delete namespace $ns --ignore-not-found --wait=true --timeout=60s >/dev/null
kubectl -n argocd delete application $ns --ignore-not-found >/dev/null 2>&1 || true
kubectl create namespace $ns >/dev/null
kubectl apply -f crds/ >/dev/null

step "Argo CD (application-controller, repo-server, server, redis) and a git server, on loopback"
"$py" -m flagops_dev.argocd "$KUBECONFIG" --workdir "$run" --repository epic21 >"$run/argocd.out" 2>"$run/argocd.err" &
pids+=($!)
wait_for 180 "Argo CD" grep -q '^WORKTREE=' "$run/argocd.out"
eval "$(sed 's/^/export /' "$run/argocd.out")"
echo "Argo CD at $ARGOCD_SERVER, git at $REPO_URL"
echo "flagops' health checks and actions, installed as the README says:"
show kubectl -n argocd get configmap argocd-cm -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}'

step "The operator (flagops run, watching namespace $ns)"
flagops run --namespace $ns >"$run/operator.log" 2>&1 &
pids+=($!)

step "Git: the Epic 21 workloads and flags, 21_01a and 21_01b turned on"
mkdir -p "$WORKTREE/epic21"
cp examples/epic21/workloads.yaml "$WORKTREE/epic21/"
sed '/name: USE_NEW_DIALOG_CONTEXT_REPO/,/enabled:/s/enabled: false/enabled: true/;
     /name: USE_NEW_HOMEWORK_REVIEW_SERVICE/,/enabled:/s/enabled: false/enabled: true/' \
  examples/epic21/flagset.yaml >"$WORKTREE/epic21/flagset.yaml"
commit "Epic 21: stages 21_01a and 21_01b on"
show argocd app create $ns --repo "$REPO_URL" --path epic21 --revision main \
  --dest-server https://kubernetes.default.svc --dest-namespace $ns \
  --sync-policy automated --auto-prune --self-heal --sync-option RespectIgnoreDifferences=true
wait_for 180 "the set Healthy in Argo CD" health_is FeatureFlagSet epic21 Healthy
show argocd app wait $ns --sync --health --timeout 120
show kubectl -n $ns get ffs

step "Emergency: roll back every flag through Argo CD's action on the set"
show argocd app actions list $ns --kind FeatureFlagSet
show argocd app actions run $ns emergency-rollback --kind FeatureFlagSet --resource-name epic21 --group flagops.io
wait_for 30 "the emergency request" sh -c "kubectl -n $ns get rollbacks -o name | grep -q emergency"
emergency=$(kubectl -n $ns get rollbacks -o jsonpath='{.items[0].metadata.name}')
show kubectl -n $ns wait "rollback/$emergency" --for=condition=Succeeded --timeout=120s
show kubectl -n $ns get rollbacks
echo "Git says on; flagops serves the safe values:"
show kubectl -n $ns get configmap epic21-flags -o jsonpath='{.data.USE_NEW_DIALOG_CONTEXT_REPO} {.data.USE_NEW_HOMEWORK_REVIEW_SERVICE}{"\n"}'
echo "and Argo CD reports the Application Synced (what flagops writes is no drift):"
show argocd app get $ns --refresh
show kubectl flagops -n $ns release "$emergency"
wait_for 60 "Git's values served again" sh -c \
  "kubectl -n $ns get configmap epic21-flags -o jsonpath='{.data.USE_NEW_DIALOG_CONTEXT_REPO}' | grep -qx true"

step "A rollback committed to Git: two flags, so it waits for approval"
cat >"$WORKTREE/epic21/rollback.yaml" <<'YAML'
apiVersion: flagops.io/v1alpha1
kind: RollbackRequest
metadata:
  name: rollback-21-01a-b
spec:
  flagSet: epic21
  flags: [USE_NEW_DIALOG_CONTEXT_REPO, USE_NEW_HOMEWORK_REVIEW_SERVICE]
  reason: "21_01a and 21_01b: dialog errors after the interface switch"
YAML
commit "Roll back 21_01a and 21_01b"
wait_for 90 "the request Suspended in Argo CD" health_is RollbackRequest rollback-21-01a-b Suspended
show argocd app get $ns
show argocd app actions run $ns approve --kind RollbackRequest --resource-name rollback-21-01a-b --group flagops.io
show kubectl -n $ns wait rollback/rollback-21-01a-b --for=condition=Succeeded --timeout=120s
wait_for 90 "the request Healthy in Argo CD" health_is RollbackRequest rollback-21-01a-b Healthy
show argocd app get $ns
show kubectl -n $ns get rollbacks -o wide

step "Done. The cluster keeps running (Argo CD and the operator stop with this script):"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  make cluster-down    # stops it"
