# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: e2544d4a63f36d5d9190279b4f2a9d48b1709378c487fde8707c70d9b5a5ed22
"sha256-OASMZc4MtQ8op63cbDmzEigQWQ/nzub++SB/eqsogiE="
