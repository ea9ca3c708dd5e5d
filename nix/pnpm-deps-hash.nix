# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: da3fec162871dcef795b6c5d0d0698eeae337df60fb53a5d48b3c4903c6713e2
"sha256-OASMZc4MtQ8op63cbDmzEigQWQ/nzub++SB/eqsogiE="
