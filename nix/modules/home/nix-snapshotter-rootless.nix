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
      # Inside the namespaces the daemon is uid 0, so its own default would be root's
      # gcroots directory: use the user's per-user roots (as scripts/rootless/start.sh and
      # the rootless e2e test do; see docs/rootless.md).
      services.nix-snapshotter.rootless.settings.gc_roots_dir = lib.mkDefault "/nix/var/nix/gcroots/per-user/${config.home.username}/nix-snapshotter";
    }
    (lib.mkIf cfg.enable {
      home.packages = [ cfg.package ];
      systemd.user.services.nix-snapshotter = lib.recursiveUpdate (rootless.snapshotterService cfg nsenter) {
        Service.Environment = [
          "PATH=${lib.makeBinPath (common.servicePath cfg)}"
          # The store is root's: reach it through nix-daemon.
          "NIX_REMOTE=daemon"
        ];
      };
    })
  ];
}
