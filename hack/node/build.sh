#!/usr/bin/env bash
# Builds or fetches what the local real node runs beside the control plane (kubelet comes
# from hack/controlplane/build.sh): containerd, its runc shim and ctr from the Go module
# proxy, the sandbox ("pause") binary, and Debian's runc, CNI plugins, buildah and
# debootstrap (installed with apt-get: the node needs root anyway).
#
# Binaries land in the same cache as the control plane, keyed by version and a hash of the
# wrapper module, so a second run reuses them.
#
#   build.sh                 build what is missing, print progress and the total time
#   build.sh --print-paths   the same, then print NAME=PATH lines (stdout only)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${FLAGOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagops}
mode=${1:-build}
# shellcheck source=../lib.sh
source "$here/../lib.sh"

if [ "$(uname -s)" != Linux ]; then
  echo "node/build.sh: a real node needs Linux (containerd, runc, cgroups)" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "node/build.sh: Go is not on PATH; install Go 1.26 or newer (https://go.dev/doc/install)" >&2
  exit 1
fi
total_start=$(date +%s)

# Debian's packages: the binaries sit where the packages put them.
packages=(runc containernetworking-plugins buildah debootstrap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "node/build.sh: the real node needs root and Debian's packages: ${missing[*]} (apt-get install them)" >&2
    exit 1
  fi
  log "debian packages: installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  # The package lists of a fresh machine may be empty or stale.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
fi
log "debian packages: ${packages[*]} installed"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
key() {
  local module=$1 version=$2
  echo "$version-$(cat "$here/$module"/go.* "$here/$module"/*.go 2>/dev/null | sha256sum | cut -c1-12)"
}
if ! grep -qE "^require github.com/containerd/containerd/v2 v$CONTAINERD_VERSION$" "$here/containerd/go.mod"; then
  echo "node/build.sh: containerd/go.mod does not require containerd v$CONTAINERD_VERSION (versions.env)" >&2
  exit 1
fi
containerd_dir="$cache/containerd-$(key containerd "v$CONTAINERD_VERSION")"
pause_dir="$cache/pause-$(key pause "v$PAUSE_VERSION")"

# The tags leave out snapshotters that need cgo or kernel features the node does not use.
tags="no_btrfs no_devmapper no_zfs"
ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION"
targets=(
  "containerd|containerd|github.com/containerd/containerd/v2/cmd/containerd|$containerd_dir|$ldflags"
  "containerd-shim-runc-v2|containerd|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|$containerd_dir|$ldflags"
  "ctr|containerd|github.com/containerd/containerd/v2/cmd/ctr|$containerd_dir|$ldflags"
  "pause|pause|.|$pause_dir|-s -w"
)
build_targets "$here" "$tags" "${targets[@]}"
log "node components ready in $(($(date +%s) - total_start))s"

if [ "$mode" = "--print-paths" ]; then
  print_target_paths "${targets[@]}"
  echo "runc=$(command -v runc || echo /usr/sbin/runc)"
  echo "cni-bin-dir=/usr/lib/cni"
  echo "pause-version=$PAUSE_VERSION"
fi
