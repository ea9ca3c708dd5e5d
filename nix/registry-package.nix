# The `nix-registry` package: only the on-demand registry's program
# (bin/nix-registry), taken from the nix-snapshotter package's build (the same
# pnpm dependencies, one build of the workspace; nix/package.nix wraps it with
# Nix, git and util-linux on its PATH).
{
  lib,
  runCommand,
  nix-snapshotter,
}:
let
  version = (lib.importJSON ../apps/nix-registry/package.json).version;
in
runCommand "nix-registry-${version}" { snapshotter = nix-snapshotter; } ''
  mkdir -p "$out/bin"
  ln -s "$snapshotter/bin/nix-registry" "$out/bin/nix-registry"
''
// {
  pname = "nix-registry";
  inherit version;
  meta = {
    description = "read-only OCI registry that builds nix-snapshotter images from their names on demand";
    license = lib.licenses.mit;
    mainProgram = "nix-registry";
    platforms = lib.platforms.linux;
  };
}
