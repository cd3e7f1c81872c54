# Shared by the build scripts under hack/ (sourced, not run). They print progress on stdout,
# or on stderr in --print-paths mode, whose stdout is only NAME=PATH lines.

log() { if [ "${mode:-}" = "--print-paths" ]; then echo "$*" >&2; else echo "$*"; fi; }

# build_targets ROOT TAGS TARGET...: each TARGET is NAME|MODULE|PACKAGE|DIR|LDFLAGS; builds
# DIR/NAME from PACKAGE in the Go module ROOT/MODULE unless it is there. One binary at a
# time: the linker of a Kubernetes binary alone wants GiBs. Sets BUILT to the number built.
build_targets() {
  local root=$1 tags=$2 step=0 target name module package dir ldflags start
  shift 2
  BUILT=0
  for target in "$@"; do
    IFS='|' read -r name module package dir ldflags <<<"$target"
    step=$((step + 1))
    if [ -x "$dir/$name" ]; then
      log "[$step/$#] $name: cached in $dir"
      continue
    fi
    log "[$step/$#] $name: building $package ..."
    start=$(date +%s)
    mkdir -p "$dir"
    (cd "$root/$module" && go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$dir/.$name.tmp" "$package") >&2
    mv "$dir/.$name.tmp" "$dir/$name"
    BUILT=$((BUILT + 1))
    log "[$step/$#] $name: built in $(($(date +%s) - start))s"
  done
}

# print_target_paths TARGET...: NAME=DIR/NAME for each target.
print_target_paths() {
  local target name dir
  for target in "$@"; do
    IFS='|' read -r name _ _ dir _ <<<"$target"
    echo "$name=$dir/$name"
  done
}

# apt_download DIR PACKAGE...: the packages' .deb files into DIR, without installing them.
apt_download() {
  local dir=$1
  shift
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no apt-get to fetch Debian's $*; install them by other means" >&2
    return 1
  fi
  if ! (cd "$dir" && apt-get download "$@" >&2 2>/dev/null); then
    # The package lists of a fresh machine may be empty.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
    (cd "$dir" && apt-get download "$@" >&2)
  fi
}
