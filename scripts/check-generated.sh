#!/usr/bin/env bash
# Fails when regenerating the committed protobuf code would change it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pnpm --filter @nix-snapshotter/api run generate >/dev/null
if ! git diff --quiet --exit-code -- packages/api/src/gen || \
   [ -n "$(git ls-files --others --exclude-standard -- packages/api/src/gen)" ]; then
  echo "check-generated: packages/api/src/gen is stale; run 'pnpm generate' and commit" >&2
  git status --short -- packages/api/src/gen >&2
  exit 1
fi
