#!/usr/bin/env bash
# Fails when nix/pnpm-deps-hash.nix was not computed for the current pnpm-lock.yaml: the file
# records the lock file's sha256 it was computed for (scripts/pnpm-deps-hash.sh writes both).
# Cheap and offline; computing the hash itself needs the npm registry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
file=nix/pnpm-deps-hash.nix
recorded="$(sed -n 's/^# pnpm-lock.yaml sha256: \([0-9a-f]\{64\}\)$/\1/p' "$file")"
actual="$(sha256sum pnpm-lock.yaml | cut -d' ' -f1)"
hash="$(grep -o '"sha256-[A-Za-z0-9+/]\{43\}="' "$file" | tr -d '"' || true)"
if [ -z "$hash" ] || [ "$hash" = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ]; then
  echo "check-pnpm-deps-hash: $file holds no computed hash; run scripts/pnpm-deps-hash.sh and commit" >&2
  exit 1
fi
if [ "$recorded" != "$actual" ]; then
  echo "check-pnpm-deps-hash: $file was computed for pnpm-lock.yaml sha256 '${recorded:-none}'," >&2
  echo "  the lock file is now $actual: run scripts/pnpm-deps-hash.sh and commit" >&2
  exit 1
fi
echo "check-pnpm-deps-hash: $hash matches pnpm-lock.yaml ($actual)" >&2
