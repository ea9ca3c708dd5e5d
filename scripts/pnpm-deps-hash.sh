#!/usr/bin/env bash
# Computes the hash that nixpkgs' fetchPnpmDeps gives our pnpm dependencies, and writes it to
# nix/pnpm-deps-hash.nix (with the lock file's sha256, which scripts/check-pnpm-deps-hash.sh
# compares). Run after pnpm-lock.yaml changes; needs the npm registry, Nix and jq.
#
# It redoes the fixed-output derivation's steps (nixpkgs, pkgs/build-support/node/fetch-pnpm-deps,
# fetcherVersion 1 or 2) outside Nix:
#   - pnpm (PNPM_VERSION, the pnpm_10 of the nixpkgs release flake.nix names) installed from the
#     npm registry into a temporary directory;
#   - a fresh HOME, as writableTmpDirAsHomeHook gives the build, and from it
#     `pnpm config set manage-package-manager-versions false`, `side-effects-cache false`,
#     `update-notifier false`; then `pnpm config set store-dir <output>` in the source;
#   - `pnpm install --force --ignore-scripts --registry="$NIX_NPM_REGISTRY" --frozen-lockfile` in a
#     copy of what pnpm reads from the package's source (the root package.json, pnpm-lock.yaml,
#     pnpm-workspace.yaml and every workspace package.json);
#   - `.fetcher-version` (fetcherVersion > 1), removal of v3|v10/tmp and v3|v10/projects, every
#     *.json rewritten by `jq --sort-keys 'del(.. | .checkedAt?)'`, and (fetcherVersion >= 2)
#     files named *-exec mode 555, other files 444, directories 555;
#   - the NAR hash (sha256) of the output, by `nix hash path` and checked against
#     `nix-store --dump | sha256sum`, printed as SRI.
#
# Usage: scripts/pnpm-deps-hash.sh [--print]   (--print: only print the hash, write nothing)
# Environment: PNPM_VERSION (default below), NIX_NPM_REGISTRY (passed to --registry as nixpkgs
# does; empty means pnpm's default), KEEP_STORE=1 keeps the computed store and prints its path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The pnpm_10 version of the nixpkgs release named in flake.nix: see docs/nix-interface.md
# ("The dependency hash") for how it was chosen and how to check it against your nixpkgs.
default_pnpm_version="10.34.4"
pnpm_version="${PNPM_VERSION:-$default_pnpm_version}"
print_only=0
case "${1:-}" in
  --print) print_only=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--print]" >&2
    exit 2
    ;;
esac

fetcher_version="$(sed -n 's/^ *fetcherVersion = \([0-9]*\);.*/\1/p' nix/package.nix)"
case "$fetcher_version" in
  1 | 2) ;;
  *)
    echo "pnpm-deps-hash: nix/package.nix has fetcherVersion '$fetcher_version'; this script does 1 and 2" >&2
    exit 1
    ;;
esac

for program in node npm jq nix nix-store sha256sum; do
  if ! command -v "$program" >/dev/null 2>&1; then
    echo "pnpm-deps-hash: $program is needed" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
cleanup() {
  if [ "${KEEP_STORE:-}" = "1" ]; then
    echo "pnpm-deps-hash: kept $work" >&2
  else
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

echo "pnpm-deps-hash: pnpm $pnpm_version, fetcherVersion $fetcher_version" >&2
npm install --silent --no-save --no-audit --no-fund --prefix "$work/pnpm" "pnpm@$pnpm_version" >&2
node_dir="$(dirname "$(command -v node)")"
pnpm_dir="$work/pnpm/node_modules/.bin"

# What pnpm reads from the source nix/package.nix filters.
source_dir="$work/source"
mkdir -p "$source_dir"
cp package.json pnpm-lock.yaml pnpm-workspace.yaml "$source_dir/"
while IFS= read -r manifest; do
  mkdir -p "$source_dir/$(dirname "$manifest")"
  cp "$manifest" "$source_dir/$manifest"
done < <(find packages apps bench -maxdepth 2 -name package.json -not -path '*/node_modules/*' | sort)

store="$work/out"
home="$work/home"
mkdir -p "$home"

# A build's environment: a HOME of its own, none of the caller's npm or pnpm settings. Only how to
# reach the registry is kept (proxies, as lib.fetchers.proxyImpureEnvVars lets through, and the
# TLS trust store): that decides where packages come from, not what the store holds.
pass_through=()
for name in HTTP_PROXY HTTPS_PROXY FTP_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy ftp_proxy \
  all_proxy no_proxy NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR NIX_SSL_CERT_FILE; do
  if [ -n "${!name:-}" ]; then pass_through+=("$name=${!name}"); fi
done
run_pnpm() {
  env -i \
    PATH="$pnpm_dir:$node_dir:/usr/bin:/bin" \
    HOME="$home" \
    NIX_NPM_REGISTRY="${NIX_NPM_REGISTRY:-}" \
    "${pass_through[@]}" \
    pnpm "$@"
}

(
  cd "$home"
  installed="$(run_pnpm --version)"
  if [ "$installed" != "$pnpm_version" ]; then
    echo "pnpm-deps-hash: asked for pnpm $pnpm_version, got $installed" >&2
    exit 1
  fi
  run_pnpm config set manage-package-manager-versions false
  run_pnpm config set side-effects-cache false
  run_pnpm config set update-notifier false
)
(
  cd "$source_dir"
  run_pnpm config set store-dir "$store"
  run_pnpm install \
    --force \
    --ignore-scripts \
    --registry="${NIX_NPM_REGISTRY:-}" \
    --frozen-lockfile \
    --reporter=append-only >&2
)

if [ "$fetcher_version" -gt 1 ]; then
  echo "$fetcher_version" >"$store/.fetcher-version"
fi
rm -rf "$store"/{v3,v10}/tmp
find "$store" -name "*.json" -print0 | while IFS= read -r -d '' file; do
  jq --sort-keys "del(.. | .checkedAt?)" "$file" >"$file.sorted"
  mv "$file.sorted" "$file"
done
rm -rf "$store"/{v3,v10}/projects
if [ "$fetcher_version" -ge 2 ]; then
  find "$store" -type f -name "*-exec" -print0 | xargs --no-run-if-empty -0 chmod 555
  find "$store" -type f -not -name "*-exec" -print0 | xargs --no-run-if-empty -0 chmod 444
  find "$store" -type d -print0 | xargs --no-run-if-empty -0 chmod 555
fi

hash="$(nix --extra-experimental-features nix-command hash path --type sha256 --sri "$store")"
dumped="$(nix-store --dump "$store" | sha256sum | cut -d' ' -f1)"
from_dump="$(nix --extra-experimental-features nix-command hash to-sri --type sha256 "$dumped")"
if [ "$hash" != "$from_dump" ]; then
  echo "pnpm-deps-hash: nix hash path says $hash, nix-store --dump | sha256sum says $from_dump" >&2
  exit 1
fi

if [ "$print_only" = "1" ]; then
  echo "$hash"
  exit 0
fi

lock_sha256="$(sha256sum pnpm-lock.yaml | cut -d' ' -f1)"
cat >nix/pnpm-deps-hash.nix <<EOF
# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion $fetcher_version, pnpm $pnpm_version)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with \`nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }\` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: $lock_sha256
"$hash"
EOF
echo "$hash"
echo "pnpm-deps-hash: wrote nix/pnpm-deps-hash.nix" >&2
