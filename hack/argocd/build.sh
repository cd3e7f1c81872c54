#!/usr/bin/env bash
# Builds a real Argo CD for the GitOps tests and `make demo-gitops`: one binary from the Go
# wrapper module beside this script (it dispatches on its name: argocd-application-controller,
# argocd-repo-server, argocd-server, argocd), Argo CD's CRDs from the same module, and
# Debian's redis (redis-tools, unpacked with its two libraries, nothing installed).
#
#   build.sh                 build what is missing, print progress
#   build.sh --print-paths   the same, then print NAME=PATH lines (stdout only)
#   build.sh --regen         rewrite module/go.mod's replace block from ARGOCD_VERSION's
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARGOCD_VERSION=3.2.11   # 3.2.12 does not compile from the proxy; 3.3+ keep gitops-engine out of the module zip
REDIS_PACKAGES=(redis-tools libjemalloc2 liblzf1)
cache=${FLAGOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagops}
mode=${1:-build}
# shellcheck source=../lib.sh
source "$here/../lib.sh"

if ! command -v go >/dev/null 2>&1; then
  echo "argocd/build.sh: Go is not on PATH; install Go 1.26 or newer (https://go.dev/doc/install)" >&2
  exit 1
fi
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
module=github.com/argoproj/argo-cd/v3

if [ "$mode" = "--regen" ]; then
  upstream=$(go mod download -json "$module@v$ARGOCD_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  python3 - "$here/module/go.mod" "$upstream" "$ARGOCD_VERSION" <<'PY'
import re, sys
path, upstream, version = sys.argv[1:]
block = re.search(r"^replace \((.|\n)*?\n\)", open(upstream).read(), re.M).group(0)
text = open(path).read()
text = re.sub(r"require github\.com/argoproj/argo-cd/v3 v\S+", f"require github.com/argoproj/argo-cd/v3 v{version}", text)
text = re.sub(r"^replace \((.|\n)*?\n\)", block, text, count=1, flags=re.M)
open(path, "w").write(text)
PY
  (cd "$here/module" && go mod tidy)
  exit 0
fi

if ! grep -qE "^require $module v$ARGOCD_VERSION$" "$here/module/go.mod"; then
  echo "argocd/build.sh: module/go.mod does not require $module v$ARGOCD_VERSION; run build.sh --regen" >&2
  exit 1
fi
dir="$cache/argocd-v$ARGOCD_VERSION-$(cat "$here/module/go.mod" "$here/module/go.sum" | sha256sum | cut -c1-12)"
if [ -x "$dir/argocd" ]; then
  log "argocd: cached in $dir"
else
  log "argocd: building $module/cmd v$ARGOCD_VERSION (a cold build takes about 6 minutes) ..."
  start=$(date +%s)
  mkdir -p "$dir"
  ldflags="-s -w -X $module/common.version=$ARGOCD_VERSION -X $module/common.gitTreeState=clean"
  (cd "$here/module" && go build -trimpath -ldflags "$ldflags" -o "$dir/.argocd.tmp" "$module/cmd") >&2
  for name in argocd-application-controller argocd-repo-server argocd-server; do
    ln -sf argocd "$dir/$name"
  done
  mv "$dir/.argocd.tmp" "$dir/argocd"
  log "argocd: built in $(($(date +%s) - start))s"
fi
if [ ! -f "$dir/applicationset-crd.yaml" ]; then
  crds=$(cd "$here/module" && go list -m -f '{{.Dir}}' "$module")/manifests/crds
  cp "$crds/application-crd.yaml" "$crds/appproject-crd.yaml" "$crds/applicationset-crd.yaml" "$dir/"
fi

redis_dir="$cache/redis-$(printf '%s\n' "${REDIS_PACKAGES[@]}" | sha256sum | cut -c1-12)"
if [ -x "$redis_dir/redis-server" ]; then
  log "redis: cached in $redis_dir"
else
  log "redis: fetching Debian's ${REDIS_PACKAGES[*]} ..."
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  apt_download "$work" "${REDIS_PACKAGES[@]}"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/unpacked"; done
  mkdir -p "$redis_dir/lib"
  cp -a "$work"/unpacked/usr/lib/x86_64-linux-gnu/lib{jemalloc,lzf}.so* "$redis_dir/lib/" 2>/dev/null ||
    cp -a "$work"/unpacked/usr/lib/*/lib{jemalloc,lzf}.so* "$redis_dir/lib/"
  install -m 0755 "$work/unpacked/usr/bin/redis-check-rdb" "$redis_dir/redis-check-rdb"
  # One binary: it runs as the server unless its name says redis-check-rdb.
  ln -sf redis-check-rdb "$redis_dir/redis-server"
  log "redis: $(LD_LIBRARY_PATH="$redis_dir/lib" "$redis_dir/redis-server" --version)"
fi

if [ "$mode" = "--print-paths" ]; then
  echo "argocd=$dir/argocd"
  echo "argocd-crds=$dir"
  echo "redis-server=$redis_dir/redis-server"
  echo "redis-lib=$redis_dir/lib"
fi
