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
log() { if [ "$mode" = "--print-path" ]; then echo "$*" >&2; else echo "$*"; fi; }

if [ -x "$binary" ] && [ -x "$dir/promtool" ]; then
  log "prometheus: cached in $dir"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fetch.sh: no prometheus on PATH and no apt-get to fetch Debian's; install Prometheus 2.x" >&2
    exit 1
  fi
  log "prometheus: fetching Debian's package $version ..."
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  if ! apt-get download "prometheus=$version" >&2 2>/dev/null && ! apt-get download prometheus >&2 2>/dev/null; then
    # The package lists of a fresh machine may be empty.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
    apt-get download prometheus >&2
  fi
  dpkg-deb -x prometheus_*.deb unpacked
  mkdir -p "$dir"
  install -m 0755 unpacked/usr/bin/promtool "$dir/promtool"
  install -m 0755 unpacked/usr/bin/prometheus "$dir/.prometheus.tmp"
  mv "$dir/.prometheus.tmp" "$binary"
  log "prometheus: $("$binary" --version 2>&1 | head -1)"
fi
if [ "$mode" = "--print-path" ]; then echo "$binary"; fi
