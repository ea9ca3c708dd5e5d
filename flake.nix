{
  description = "nix-snapshotter (TypeScript): containerd takes container packages from the Nix store";

  # Node 24 and fetchPnpmDeps/pnpmConfigHook (or pnpm_10.fetchDeps) are needed.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
        };

      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));
    in
    {
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (pkgs: {
        inherit (pkgs) nix-snapshotter;
        default = pkgs.nix-snapshotter;
      });

      apps = forAllSystems (pkgs: {
        nix-snapshotter = {
          type = "app";
          program = "${pkgs.nix-snapshotter}/bin/nix-snapshotter";
        };
        nix2container = {
          type = "app";
          program = "${pkgs.nix-snapshotter}/bin/nix2container";
        };
        default = self.apps.${pkgs.stdenv.hostPlatform.system}.nix-snapshotter;
      });

      nixosModules = import ./nix/modules/nixos;

      homeModules = import ./nix/modules/home;

      lib = import ./nix/lib.nix;

      checks = forAllSystems (
        pkgs:
        import ./nix/checks.nix {
          inherit pkgs self;
          inherit (lib) nixosSystem;
        }
      );
    };
}
