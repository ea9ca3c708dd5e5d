# virtualisation.containerd.rootless in home-manager.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.virtualisation.containerd.rootless;
  common = import ../common/lib.nix { inherit lib pkgs; };
  rootless = import ../common/rootless.nix { inherit lib pkgs; };
in
{
  imports = [ ../common/containerd-rootless.nix ];

  config = lib.mkIf cfg.enable {
    home.sessionVariablesExtra = common.containerdEnvironment cfg;
    systemd.user.services.containerd = rootless.containerdService cfg;
  };
}
