# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: 3bc09360614957e781a357c709b62ce457ce6743568467a06b0ba2c03c6f5ca1
"sha256-OASMZc4MtQ8op63cbDmzEigQWQ/nzub++SB/eqsogiE="
