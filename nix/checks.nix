# Flake checks: the package, an image built from pkgs.hello, the
# configuration files rendered by the NixOS modules, checked by containerd's
# own parser, and the registry's unit as nixpkgs renders it.
{
  pkgs,
  self,
  nixosSystem,
}:
let
  inherit (pkgs) lib;

  hello-image = pkgs.nix-snapshotter.buildImage {
    name = "hello";
    config.entrypoint = [ "${pkgs.hello}/bin/hello" ];
  };

  nixos = nixosSystem {
    inherit (pkgs.stdenv.hostPlatform) system;
    modules = [
      self.nixosModules.default
      {
        nixpkgs.pkgs = pkgs;
        boot.loader.grub.enable = false;
        fileSystems."/".device = "none";
        system.stateVersion = "25.11";
        virtualisation.containerd = {
          enable = true;
          nixSnapshotterIntegration = true;
        };
        services.nix-snapshotter.enable = true;
        services.preload-containerd = {
          enable = true;
          targets = [ { archives = [ hello-image ]; } ];
        };
        services.nix-registry = {
          enable = true;
          settings.pkgs_path = "/etc/nix-registry/pkgs";
        };
      }
    ];
  };

  cfg = nixos.config;
in
{
  package = pkgs.nix-snapshotter;

  image = pkgs.runCommand "check-hello-image" { nativeBuildInputs = [ pkgs.skopeo ]; } ''
    skopeo inspect --raw oci-archive:${hello-image} > $out
  '';

  nixos-configs =
    pkgs.runCommand "check-nixos-configs"
      {
        nativeBuildInputs = [ pkgs.containerd ];
      }
      ''
        containerd --config ${cfg.virtualisation.containerd.args.config} config dump > containerd.toml
        # 1.x dumps "nix", 2.x 'nix'.
        grep -Eq "snapshotter = [\"']nix[\"']" containerd.toml
        grep -q 'proxy_plugins.nix' containerd.toml
        cp ${cfg.services.nix-snapshotter.configFile} nix-snapshotter.toml
        mkdir $out
        cp containerd.toml nix-snapshotter.toml $out/
      '';

  nixos-unit = pkgs.writeText "nix-snapshotter.service" cfg.systemd.units."nix-snapshotter.service".text;

  # The registry's unit as nixpkgs renders it, and its configuration.
  nix-registry-unit = pkgs.runCommand "check-nix-registry-unit" { } ''
    cp ${pkgs.writeText "nix-registry.service" cfg.systemd.units."nix-registry.service".text} nix-registry.service
    grep -q '^ExecStart=${pkgs.nix-registry}/bin/nix-registry --config ' nix-registry.service
    grep -q 'pkgs_path = "/etc/nix-registry/pkgs"' ${cfg.services.nix-registry.configFile}
    mkdir $out
    cp nix-registry.service $out/
  '';
}
