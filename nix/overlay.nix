# Adds `nix-snapshotter` (with passthru buildImage, copyToRegistry,
# copyToContainerd) to nixpkgs.
final: _prev: {
  nix-snapshotter = final.callPackage ./package.nix { };
}
