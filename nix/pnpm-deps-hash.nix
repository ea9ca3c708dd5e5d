# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: 911359f46a3f087ba0ac82108b2f58b07d2e8582b1df540cf6148242404991fe
"sha256-OASMZc4MtQ8op63cbDmzEigQWQ/nzub++SB/eqsogiE="
