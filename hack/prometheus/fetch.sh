#!/usr/bin/env bash
# Puts a real Prometheus server into the flagops cache, from Debian's `prometheus` package
# (unpacked, not installed: no service is started, nothing outside the cache changes).
#
#   fetch.sh                print progress; fetch.sh --print-path  print only the binary's path
# promtool lands beside it.
set -euo pipefail

version=2.42.0+ds-5+deb12u1
cache=${FLAGOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagops}
dir="$cache/prometheus-${version%%+*}"
binary="$dir/prometheus"
mode=${1:-}
[ "$mode" = "--print-path" ] && mode=--print-paths   # lib.sh's log: progress to stderr
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [ -x "$binary" ] && [ -x "$dir/promtool" ]; then
  log "prometheus: cached in $dir"
else
  log "prometheus: fetching Debian's package $version ..."
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  apt_download "$work" "prometheus=$version" 2>/dev/null || apt_download "$work" prometheus
  dpkg-deb -x prometheus_*.deb unpacked
  mkdir -p "$dir"
  install -m 0755 unpacked/usr/bin/promtool "$dir/promtool"
  install -m 0755 unpacked/usr/bin/prometheus "$dir/.prometheus.tmp"
  mv "$dir/.prometheus.tmp" "$binary"
  log "prometheus: $("$binary" --version 2>&1 | head -1)"
fi
if [ "$mode" = "--print-paths" ]; then echo "$binary"; fi
