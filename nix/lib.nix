# Functions that do not need the overlay: `buildImageWith pkgs` gives
# { buildImage, copyToRegistry, copyToContainerd } for any nixpkgs that has a
# `nix-snapshotter` package, or for a given one:
#   (nix-snapshotter.lib.buildImageWith pkgs { }).buildImage { ... }
#   (nix-snapshotter.lib.buildImageWith pkgs { package = myBuild; }).buildImage { ... }
{
  buildImageWith =
    pkgs:
    {
      package ? pkgs.nix-snapshotter or (pkgs.callPackage ./package.nix { }),
    }:
    import ./build-image.nix {
      inherit (pkgs)
        lib
        stdenv
        runCommand
        closureInfo
        writeText
        writeShellScriptBin
        ;
      nix-snapshotter = package;
    };

  # linux/amd64 style platform and the OCI architecture of a nixpkgs platform.
  inherit (import ./platform.nix) ociArchitecture ociPlatform;
}
