# Adds `nix-snapshotter` (with passthru buildImage, copyToRegistry,
# copyToContainerd) and `nix-registry` (the on-demand registry's program, from
# the same build) to nixpkgs.
final: _prev: {
  nix-snapshotter = final.callPackage ./package.nix { };
  nix-registry = final.callPackage ./registry-package.nix { };
}
