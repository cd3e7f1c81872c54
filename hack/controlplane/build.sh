#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, the real node's kubelet) and helm from the Go wrapper
# modules beside this script.
#
# Binaries land in a cache outside the clone, one directory per component keyed by its
# version and a hash of its wrapper module, so a second run (or CI on the same machine)
# reuses them. The Go module and build caches are Go's own (go env GOMODCACHE GOCACHE).
#
#   build.sh                 build what is missing, print progress and the total time
#   build.sh --print-paths   build what is missing, then print NAME=PATH lines (stdout only)
#   build.sh --regen         rewrite kubernetes/go.mod's replace block for KUBERNETES_VERSION
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${FLAGOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagops}
mode=${1:-build}
# shellcheck source=../lib.sh
source "$here/../lib.sh"

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is not on PATH; install Go 1.26 or newer (https://go.dev/doc/install)" >&2
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

regen_kubernetes_replaces() {
  local gomod staging
  gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging="v0.${KUBERNETES_VERSION#1.}"
  python3 - "$here/kubernetes/go.mod" "$gomod" "$staging" "$KUBERNETES_VERSION" <<'PY'
import re, sys
path, upstream, staging, version = sys.argv[1:]
modules = re.findall(r"^\s+(k8s\.io/[a-z0-9-]+) => \./staging", open(upstream).read(), re.M)
text = open(path).read()
text = re.sub(r"require k8s\.io/kubernetes v\S+", f"require k8s.io/kubernetes v{version}", text)
block = "replace (\n" + "".join(f"\t{m} => {m} {staging}\n" for m in modules) + ")"
text = re.sub(r"replace \((.|\n)*?\n\)", block, text, count=1)
open(path, "w").write(text)
print(f"{len(modules)} staging modules replaced with {staging}")
PY
  (cd "$here/kubernetes" && go mod tidy)
}

if [ "$mode" = "--regen" ]; then
  regen_kubernetes_replaces
  exit 0
fi

# A directory name per component: version plus a short hash of its wrapper module, so an
# edit to go.mod (a bumped dependency) builds afresh instead of reusing a stale binary.
key() {
  local module=$1 version=$2
  echo "$version-$(cat "$here/$module/go.mod" "$here/$module/go.sum" | sha256sum | cut -c1-12)"
}

check_pin() {
  local module=$1 path=$2 version=$3
  if ! grep -qE "^\s*(require )?$path v$version( |$)" "$here/$module/go.mod"; then
    echo "build.sh: $module/go.mod does not require $path v$version (versions.env); run build.sh --regen or fix go.mod" >&2
    exit 1
  fi
}
check_pin kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"

k8s_dir="$cache/kubernetes-$(key kubernetes "v$KUBERNETES_VERSION")"
etcd_dir="$cache/etcd-$(key etcd "v$ETCD_VERSION")"
kwok_dir="$cache/kwok-$(key kwok "v$KWOK_VERSION")"
helm_dir="$cache/helm-$(key helm "v$HELM_VERSION")"

# Upstream stamps the version into both packages (hack/lib/version.sh); without it
# `--version` prints v0.0.0-master and kwok cannot tell which flags the binaries take.
minor=${KUBERNETES_VERSION#1.}; minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=v$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  k8s_ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

targets=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|$k8s_dir|$k8s_ldflags"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|$k8s_dir|$k8s_ldflags"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|$k8s_dir|$k8s_ldflags"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|$k8s_dir|$k8s_ldflags"
  "kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|$k8s_dir|$k8s_ldflags"
  "etcd|etcd|go.etcd.io/etcd/server/v3|$etcd_dir|-s -w"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|$kwok_dir|-s -w"
  "helm|helm|helm.sh/helm/v3/cmd/helm|$helm_dir|-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
)

total_start=$(date +%s)
build_targets "$here" "" "${targets[@]}"
log "control plane binaries ready: $BUILT built, $((${#targets[@]} - BUILT)) cached, $(($(date +%s) - total_start))s in all"

if [ "$mode" = "--print-paths" ]; then print_target_paths "${targets[@]}"; fi
