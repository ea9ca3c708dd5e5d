# Extends nixpkgs' virtualisation.containerd with the nix snapshotter, k3s and
# gVisor integrations and the CONTAINERD_* shell defaults.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.virtualisation.containerd;
  common = import ../common/lib.nix { inherit lib pkgs; };
  snapshotterAddress = config.services.nix-snapshotter.settings.address;
in
{
  imports = [
    ./nix-snapshotter.nix
    ./k3s.nix
  ];

  options.virtualisation.containerd = common.containerdOptions // {
    k3sIntegration = lib.mkEnableOption ''
      k3s on this containerd: k3s is started with
      `--container-runtime-endpoint` pointing at it (and, with
      nixSnapshotterIntegration, `--image-service-endpoint` pointing at
      nix-snapshotter), and containerd's CRI gets the settings k3s' own
      containerd has (CNI config and plugin directories with flannel, sandbox
      image, stream server)'';
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        virtualisation.containerd.settings = common.containerdBaseSettings cfg;
        environment.extraInit = common.containerdEnvironment cfg;
        systemd.services.containerd.path = cfg.path;
      }
      (lib.mkIf cfg.nixSnapshotterIntegration {
        virtualisation.containerd = {
          setSnapshotter = lib.mkDefault "nix";
          settings = common.nixSnapshotterContainerdSettings snapshotterAddress;
        };
        systemd.services.containerd = {
          wants = [ "nix-snapshotter.service" ];
          after = [ "nix-snapshotter.service" ];
        };
      })
      (lib.mkIf cfg.k3sIntegration {
        virtualisation.containerd.setNamespace = lib.mkDefault "k8s.io";
        virtualisation.containerd.settings = common.k3sContainerdSettings;
        services.k3s.moreFlags = [ "--container-runtime-endpoint unix:///run/containerd/containerd.sock" ];
      })
      (lib.mkIf (cfg.k3sIntegration && cfg.nixSnapshotterIntegration) {
        services.k3s.moreFlags = [ "--image-service-endpoint unix://${snapshotterAddress}" ];
      })
      (lib.mkIf cfg.gVisorIntegration {
        virtualisation.containerd = {
          path = [ pkgs.gvisor ];
          settings = common.gVisorContainerdSettings;
        };
      })
    ]
  );
}
