# services.preload-containerd: import image archives into containerd at boot.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.preload-containerd;
  common = import ../common/lib.nix { inherit lib pkgs; };
in
{
  options.services.preload-containerd = common.preloadOptions false;

  config = lib.mkIf (cfg.enable && cfg.targets != [ ]) {
    systemd.services.preload-containerd = lib.mkMerge [
      (common.toNixosService (common.preloadService cfg))
      {
        description = "Import image archives into containerd";
        wantedBy = [ "multi-user.target" ];
      }
    ];
  };
}
