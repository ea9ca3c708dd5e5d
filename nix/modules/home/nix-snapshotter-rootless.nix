# services.nix-snapshotter.rootless in home-manager: the daemon as a systemd
# user service inside rootless containerd's namespaces.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nix-snapshotter.rootless;
  common = import ../common/lib.nix { inherit lib pkgs; };
  rootless = import ../common/rootless.nix { inherit lib pkgs; };
  nsenter = config.virtualisation.containerd.rootless.nsenter or rootless.nsenter;
in
{
  options.services.nix-snapshotter.rootless = common.snapshotterOptions // {
    enable = lib.mkEnableOption ''
      nix-snapshotter for rootless containerd, as a systemd user service
      (enable virtualisation.containerd.rootless too)'';
  };

  config = lib.mkMerge [
    {
      services.nix-snapshotter.rootless.configFile = lib.mkOptionDefault (
        common.renderSettings "nix-snapshotter.toml" cfg.settings
      );
    }
    (lib.mkIf cfg.enable {
      home.packages = [ cfg.package ];
      systemd.user.services.nix-snapshotter = lib.recursiveUpdate (rootless.snapshotterService cfg nsenter) {
        Service.Environment = "PATH=${lib.makeBinPath (common.servicePath cfg)}";
      };
    })
  ];
}
