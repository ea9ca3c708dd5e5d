#!/usr/bin/env bash
# Usage: scripts/fetch-containerd.sh <suite>
#
# Downloads Debian's `containerd` package from a newer suite (trixie -> 1.7.x, sid -> 2.1.x) and
# unpacks it, without installing anything, into
#   /var/cache/nix-snapshotter-tests/containerd-<suite>/
# then prints the directory holding `containerd`, `containerd-shim-runc-v2` and `ctr`.
#
# The mirror is taken from the machine's own apt sources (no host name is written here); apt runs
# with private sources, lists and cache directories, so the system's apt state is untouched.
# Idempotent: a second run prints the cached directory at once.
#
# Only containerd's own binaries are used from the newer suite: its runc needs a newer glibc than
# bookworm's, so put the printed directory on PATH *after* the directory of bookworm's runc, or
# pass the binaries by full path (the test harness does the latter).
set -euo pipefail

suite="${1:-}"
case "$suite" in
  trixie | sid | forky | testing | unstable) ;;
  *)
    echo "usage: $0 <trixie|sid>" >&2
    exit 2
    ;;
esac

cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
target="$cache_root/containerd-$suite"
bin_dir="$target/usr/bin"

if ! { [ -x "$bin_dir/containerd" ] && [ -x "$bin_dir/ctr" ] && [ -x "$bin_dir/containerd-shim-runc-v2" ]; }; then
  # A cache made before fetch-debian-package.sh has no .complete marker: fetch it again.
  rm -rf "$target"
  bash "$(dirname "${BASH_SOURCE[0]}")/fetch-debian-package.sh" containerd "$suite" >/dev/null
  "$bin_dir/containerd" --version >&2
fi
echo "$bin_dir"

