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

      # Example images and Kubernetes resources (the Go project's outputs).
      examplesFor = pkgs: import ./nix/examples.nix { inherit pkgs; };
    in
    {
      overlays.default = import ./nix/overlay.nix;

      packages = forAllSystems (
        pkgs:
        let
          examples = examplesFor pkgs;
        in
        {
          inherit (pkgs) nix-snapshotter nix-registry;
          default = pkgs.nix-snapshotter;
          # nix build .#image-hello; then nix2container load result, or
          # nerdctl load < result.
          image-hello = examples.images.hello;
          image-redis = examples.images.redis;
          image-redisWithShell = examples.images.redisWithShell;
          # kubectl apply -f result/ (a Pod running redis from a nix:0 image).
          redis-k8s-resources = examples.k8sResourcesDir;
        }
      );

      # The redis Pod and Service as Nix attributes, per system.
      k8sResources = forAllSystems (pkgs: (examplesFor pkgs).k8sResources);

      # nix develop: the toolchain of the workspace and the programs its tests drive.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.pnpm_10
            pkgs.nix
            pkgs.containerd
            pkgs.runc
            pkgs.skopeo
            pkgs.go
          ];
        };
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
        nix-registry = {
          type = "app";
          program = "${pkgs.nix-registry}/bin/nix-registry";
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
