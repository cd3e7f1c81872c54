#!/usr/bin/env bash
# Builds the images the local real node runs, with buildah (from Debian, no Docker engine):
#   flagops.local/flagops:HASH    the operator, from the repository's Dockerfile
#   flagops.local/butler-sim:dev  the simulated Butler service (examples/butler-sim/Dockerfile)
#   registry.k8s.io/pause:VERSION the sandbox image (hack/node/pause)
# No registry serves python:3.11-slim here, so the Dockerfiles build FROM a base made on
# this machine: Debian bookworm (debootstrap) with its python3, passed as --build-arg BASE.
#
# Each image is written as a docker-archive into the cache, named by a hash of its inputs,
# so an unchanged tree rebuilds nothing; buildah's own storage lives in the cache too.
#
#   build.sh                 build what is missing, print progress
#   build.sh --print-paths   the same, then print NAME=ARCHIVE lines (stdout only)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../node/versions.env
source "$root/hack/node/versions.env"
cache=${FLAGOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flagops}
mode=${1:-build}
log() { if [ "$mode" = "--print-paths" ]; then echo "$*" >&2; else echo "$*"; fi; }

paths=$(bash "$root/hack/node/build.sh" --print-paths)
pause_binary=$(sed -n 's/^pause=//p' <<<"$paths")
images="$cache/images"
mkdir -p "$images"
buildah=(buildah --root "$cache/buildah/overlay" --runroot "$cache/buildah/run-overlay" --storage-driver overlay)
# RUN steps need the network for pip. Where the machine reaches PyPI through a TLS proxy
# with its own CA (pip.conf's `cert`), the build sees the same CA bundle and pip.conf.
run_mounts=()
for file in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
  [ -f "$file" ] && run_mounts+=(--volume "$file:$file:ro")
done

hash_of() { (cd "$root" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z |
  xargs -0 sha256sum | sha256sum | cut -c1-12); }

# The base: bookworm's python3 (3.11, as python:3.11-slim) with venv and `python`.
base_packages=python3,python3-venv,python-is-python3
base_name=flagops.local/debian-python:bookworm
base_key=$(echo "$base_packages" | sha256sum | cut -c1-12)
label='{{index .OCIv1.Config.Labels "flagops.base"}}'
if [ "$("${buildah[@]}" inspect --type image --format "$label" "$base_name" 2>/dev/null)" != "$base_key" ]; then
  log "base image: debootstrap bookworm with $base_packages (a few minutes) ..."
  start=$(date +%s)
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include="$base_packages" bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/usr/share/doc "$work"/rootfs/usr/share/man
  container=$("${buildah[@]}" from scratch)
  tar -C "$work/rootfs" -c . | tar -C "$("${buildah[@]}" mount "$container")" -x
  "${buildah[@]}" umount "$container" >/dev/null
  "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 --label "flagops.base=$base_key" "$container"
  "${buildah[@]}" commit --quiet --rm "$container" "$base_name" >/dev/null
  rm -rf "$work"
  trap - EXIT
  log "base image: $base_name in $(($(date +%s) - start))s"
else
  log "base image: $base_name cached"
fi

# build REPOSITORY TAG CONTEXT DOCKERFILE INPUTS...: a docker-archive per hash of the inputs.
# TAG "-": the hash itself, so a changed image is a new tag and `helm upgrade` rolls the pod.
build() {
  local repository=$1 tag=$2 context=$3 dockerfile=$4 key archive start name
  shift 4
  key=$(hash_of "$@")
  name="$repository:${tag/#-/$key}"
  archive="$images/$(basename "$repository")-$key.tar"
  if [ -f "$archive" ]; then
    log "$name: cached ($archive)"
  else
    log "$name: building from $dockerfile ..."
    start=$(date +%s)
    "${buildah[@]}" build --quiet --layers --network host --isolation chroot "${run_mounts[@]}" \
      --build-arg "BASE=$base_name" -f "$root/$dockerfile" -t "$name" "$root/$context" >&2
    rm -f "$images/$(basename "$repository")"-*.tar
    "${buildah[@]}" push --quiet "$name" "docker-archive:$archive.tmp:$name" >&2
    mv "$archive.tmp" "$archive"
    log "$name: built in $(($(date +%s) - start))s"
  fi
  echo "$name=$archive" >>"$images/.paths"
}
rm -f "$images/.paths"
build flagops.local/flagops - . Dockerfile Dockerfile pyproject.toml constraints.txt README.md operator
build flagops.local/butler-sim dev examples/butler-sim examples/butler-sim/Dockerfile examples/butler-sim

# The sandbox image: one static binary, no base.
pause_name="registry.k8s.io/pause:$PAUSE_VERSION"
pause_archive="$images/pause-$PAUSE_VERSION-$(sha256sum "$pause_binary" | cut -c1-12).tar"
if [ ! -f "$pause_archive" ]; then
  container=$("${buildah[@]}" from scratch)
  "${buildah[@]}" copy --quiet "$container" "$pause_binary" /pause >/dev/null
  "${buildah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$container"
  "${buildah[@]}" commit --quiet --rm "$container" "$pause_name" >/dev/null
  rm -f "$images"/pause-*.tar
  "${buildah[@]}" push --quiet "$pause_name" "docker-archive:$pause_archive.tmp:$pause_name" >&2
  mv "$pause_archive.tmp" "$pause_archive"
  log "$pause_name: built"
else
  log "$pause_name: cached"
fi
echo "$pause_name=$pause_archive" >>"$images/.paths"

if [ "$mode" = "--print-paths" ]; then cat "$images/.paths"; fi
