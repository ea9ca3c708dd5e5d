# Builds nix/package.nix for real against the stand-in nixpkgs: the pnpm store
# fetch (stand-in/node-packaging.nix: nixpkgs' steps, from a seed store
# instead of the registry), pnpmConfigHook's offline install, the tsup builds
# of buildPhase, the production install and wrappers of installPhase.
{
  # Node the Nix build users can run (the tests' staged copy).
  node,
  # A directory laid out like the repository with the built apps (stand-in/pkgs.nix).
  repo,
  # The pnpm npm package directory.
  pnpmPackage,
  # A pnpm store with pnpm-lock.yaml's packages (the parent of its v10 directory).
  seedStore,
}:
let
  pkgs = import ./stand-in/pkgs.nix { inherit node repo; };
  packaging = import ./stand-in/node-packaging.nix { inherit node pnpmPackage seedStore; };
  package = import ../package.nix {
    inherit (pkgs)
      lib
      closureInfo
      runCommand
      writeText
      writeShellScriptBin
      nix
      git
      util-linux
      ;
    stdenv = pkgs.stdenv // {
      inherit (packaging) mkDerivation;
    };
    inherit (packaging)
      nodejs_24
      pnpm_10
      makeWrapper
      fetchPnpmDeps
      pnpmConfigHook
      ;
  };
in
{
  inherit package;
  inherit (package) pnpmDeps;
  # The overlay's nix-registry: the registry's program of the same build.
  registry = import ../registry-package.nix {
    inherit (pkgs) lib runCommand;
    nix-snapshotter = package;
  };
}
