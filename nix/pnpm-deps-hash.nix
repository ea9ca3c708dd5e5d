# Hash of the pnpm dependencies (fetchPnpmDeps, fetcherVersion 2) for
# pnpm-lock.yaml. After the lock file changes, build `.#nix-snapshotter` once:
# Nix reports the expected hash ("got: sha256-..."); put it here.
# lib.fakeHash until the first build on a machine that can fetch from npm.
"sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
