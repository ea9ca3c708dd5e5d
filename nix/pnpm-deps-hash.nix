# The hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2, pnpm 10.34.4)
# for pnpm-lock.yaml. Written by scripts/pnpm-deps-hash.sh; scripts/check-pnpm-deps-hash.sh
# (part of scripts/test) fails when the lock file no longer matches the sha256 below.
# Override with `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` (docs/nix-interface.md).
# pnpm-lock.yaml sha256: 48c7091fd719c12a2a4e3b511496b42aa5e18eca1d8531e87c0013d2055850ab
"sha256-oXl/qjGT3PlV3D8XMyCbxp2d6Vv5nUpdJTs3tmJrlkU="
