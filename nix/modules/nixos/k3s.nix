# Additions to nixpkgs' services.k3s: a mergeable list of flags, and the
# snapshotter of k3s' embedded containerd.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.k3s;
  k3sCommon = import ../common/k3s.nix { inherit lib; };
in
{
  options.services.k3s = k3sCommon.options // {
    moreFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--disable traefik" ];
      description = ''
        Flags added to k3s' command line. Unlike `extraFlags`, definitions
        from several modules are concatenated; they are joined into
        `extraFlags`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.k3s = {
      moreFlags = [ "--snapshotter ${cfg.snapshotter}" ];
      extraFlags = toString cfg.moreFlags;
    };
    systemd.services.k3s.path = lib.mkIf (cfg.snapshotter == "nix") [ pkgs.nix ];
    environment.extraInit = k3sCommon.environment {
      inherit cfg;
      address = "/run/k3s/containerd/containerd.sock";
      kubeconfig = "/etc/rancher/k3s/k3s.yaml";
    };
  };
}
