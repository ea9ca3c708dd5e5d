#!/usr/bin/env bash
# Usage: scripts/fetch-runsc.sh
#
# Downloads Debian sid's `runsc` package (gVisor; a static binary that runs on bookworm) and
# unpacks it, without installing anything, into
#   /var/cache/nix-snapshotter-tests/runsc-sid/
# then prints the path of the `runsc` binary.
#
# The mirror is taken from the machine's own apt sources (no host name is written here); apt runs
# with private sources, lists and cache directories, so the system's apt state is untouched.
# Idempotent: a second run prints the cached binary at once.
set -euo pipefail

suite=sid
cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
target="$cache_root/runsc-$suite"
binary="$target/usr/bin/runsc"

if [ ! -x "$binary" ]; then
  rm -rf "$target"
  bash "$(dirname "${BASH_SOURCE[0]}")/fetch-debian-package.sh" runsc "$suite" >/dev/null
  "$binary" --version >&2
fi
echo "$binary"

