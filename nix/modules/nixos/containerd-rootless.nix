# virtualisation.containerd.rootless on NixOS: a systemd user service for every user.
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
    environment.extraInit = common.containerdEnvironment cfg;
    systemd.user.services.containerd = common.toNixosService (rootless.containerdService cfg);
  };
}
