#!/usr/bin/env bash
# Usage: scripts/fetch-containerd.sh <suite>
#
# Downloads Debian's `containerd` package of a suite (bookworm -> 1.6.x, trixie -> 1.7.x,
# sid -> 2.1.x) and unpacks it, without installing anything, into
#   /var/cache/nix-snapshotter-tests/containerd-<suite>/
# then prints the directory holding `containerd`, `containerd-shim-runc-v2` and `ctr`.
#
# The mirror is taken from the machine's own apt sources (no host name is written here); apt runs
# with private sources, lists and cache directories, so the system's apt state is untouched.
# Idempotent: a second run prints the cached directory at once.
#
# The test harness fetches whichever of these the system's containerd is not (Debian 12 has 1.6,
# Debian 13 has 1.7). Only containerd's own binaries are used from another suite: a newer suite's
# runc needs a newer glibc than the system's, so put the printed directory on PATH *after* the
# directory of the system's runc, or pass the binaries by full path (the harness does the latter).
set -euo pipefail

suite="${1:-}"
case "$suite" in
  bookworm | trixie | sid | forky | testing | unstable) ;;
  *)
    echo "usage: $0 <bookworm|trixie|sid>" >&2
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

