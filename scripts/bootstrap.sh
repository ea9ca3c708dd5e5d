#!/usr/bin/env bash
# Source this file: it puts Node >= 22 and the pinned pnpm on PATH and installs the workspace's
# dependencies. On a machine whose node is older than 22 (Debian 12 ships 18, the image 20), it
# installs Node 24 LTS from the npm registry into .toolchain/ of this checkout: nothing global,
# no other host. Safe to source any number of times. It leaves the calling shell's options as
# they were (no `set -e` leaks into an interactive shell); a failed step makes `source` return 1.
_bootstrap_saved_options="$(set +o)"
# A command substitution does not inherit errexit: remember it from $- itself.
_bootstrap_saved_flags="$-"
set -uo pipefail

_bootstrap_main() {
  local repo_root toolchain node_version pnpm_version
  repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  toolchain="$repo_root/.toolchain"
  node_version="24.21.0"
  pnpm_version="$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' "$repo_root/package.json")"

  node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

  if [ -x "$toolchain/node_modules/.bin/node" ]; then
    export PATH="$toolchain/node_modules/.bin:$PATH"
  fi

  if ! command -v node >/dev/null 2>&1 || [ "$(node_major node)" -lt 22 ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "bootstrap: no npm to install Node $node_version with; install Debian's npm first" >&2
      return 1
    fi
    echo "bootstrap: installing Node $node_version into $toolchain" >&2
    mkdir -p "$toolchain" || return 1
    npm install --silent --no-save --prefix "$toolchain" "node@$node_version" >&2 || return 1
    export PATH="$toolchain/node_modules/.bin:$PATH"
  fi

  if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "$pnpm_version" ]; then
    echo "bootstrap: installing pnpm $pnpm_version into $toolchain" >&2
    mkdir -p "$toolchain" || return 1
    # Install both together so that npm keeps the Node package it installed above.
    npm install --silent --no-save --prefix "$toolchain" "node@$node_version" "pnpm@$pnpm_version" >&2 ||
      return 1
    export PATH="$toolchain/node_modules/.bin:$PATH"
  fi

  NIX_SNAPSHOTTER_NODE="$(command -v node)"
  export NIX_SNAPSHOTTER_NODE
  if [ "${BOOTSTRAP_SKIP_INSTALL:-}" != "1" ]; then
    (cd "$repo_root" && pnpm install --frozen-lockfile --reporter=append-only >&2) || return 1
  fi
}

if _bootstrap_main; then _bootstrap_status=0; else _bootstrap_status=1; fi
eval "$_bootstrap_saved_options"
case "$_bootstrap_saved_flags" in *e*) set -e ;; esac
unset -f _bootstrap_main node_major
unset _bootstrap_saved_options _bootstrap_saved_flags
if [ "$_bootstrap_status" -ne 0 ]; then
  unset _bootstrap_status
  echo "bootstrap: failed" >&2
  return 1 2>/dev/null || exit 1
fi
unset _bootstrap_status
