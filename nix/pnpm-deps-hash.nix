# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: 040456934ab038bcfb07acafc48510e7caaccf7946601570fee3f41e0231d4d1
"sha256-OASMZc4MtQ8op63cbDmzEigQWQ/nzub++SB/eqsogiE="
