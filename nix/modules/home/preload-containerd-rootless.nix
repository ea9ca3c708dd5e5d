# services.preload-containerd.rootless in home-manager.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.preload-containerd.rootless;
  common = import ../common/lib.nix { inherit lib pkgs; };
  rootless = import ../common/rootless.nix { inherit lib pkgs; };
in
{
  options.services.preload-containerd.rootless = common.preloadOptions true;

  config = lib.mkIf (cfg.enable && cfg.targets != [ ]) {
    systemd.user.services.preload-containerd = rootless.preloadService cfg;
  };
}
