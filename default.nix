# For users without flakes:
#   let nix-snapshotter = import (fetchTarball "https://.../archive/main.tar.gz");
#   in {
#     imports = [ nix-snapshotter.nixosModules.default ];
#     nixpkgs.overlays = [ nix-snapshotter.overlays.default ];
#   }
# The same attributes as the flake's outputs; packages are built with the
# given (or <nixpkgs>) package set: (import ./. ).packages, or
# (import ./. { pkgs = import <nixpkgs> { }; }).packages.
let
  outputs =
    pkgs:
    let
      withOverlay = pkgs.extend (import ./nix/overlay.nix);
    in
    {
      overlays.default = import ./nix/overlay.nix;
      nixosModules = import ./nix/modules/nixos;
      homeModules = import ./nix/modules/home;
      lib = import ./nix/lib.nix;
      packages =
        let
          examples = import ./nix/examples.nix { pkgs = withOverlay; };
        in
        {
          inherit (withOverlay) nix-snapshotter nix-registry;
          default = withOverlay.nix-snapshotter;
          image-hello = examples.images.hello;
          image-redis = examples.images.redis;
          image-redisWithShell = examples.images.redisWithShell;
          redis-k8s-resources = examples.k8sResourcesDir;
        };
      inherit (withOverlay) nix-snapshotter nix-registry;
    };
in
outputs (import <nixpkgs> { })
// {
  __functor =
    _:
    {
      pkgs ? import <nixpkgs> { },
    }:
    outputs pkgs;
}
