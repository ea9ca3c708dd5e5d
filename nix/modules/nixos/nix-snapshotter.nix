# services.nix-snapshotter: the daemon as a system service.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nix-snapshotter;
  common = import ../common/lib.nix { inherit lib pkgs; };
in
{
  options.services.nix-snapshotter = common.snapshotterOptions // {
    enable = lib.mkEnableOption "nix-snapshotter, the containerd snapshotter that takes container packages from the Nix store";
  };

  config = lib.mkMerge [
    {
      services.nix-snapshotter.configFile = lib.mkOptionDefault (
        common.renderSettings "nix-snapshotter.toml" cfg.settings
      );
    }
    (lib.mkIf cfg.enable {
      environment.systemPackages = [ cfg.package ];

      systemd.services.nix-snapshotter = lib.mkMerge [
        (common.toNixosService common.snapshotterServiceBase)
        {
          description = "nix-snapshotter - containerd snapshotter that takes packages from the Nix store";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          before = [ "containerd.service" ];
          partOf = [ "containerd.service" ];
          path = common.servicePath cfg;
          serviceConfig.ExecStart = common.execStart cfg;
        }
      ];
    })
  ];
}
