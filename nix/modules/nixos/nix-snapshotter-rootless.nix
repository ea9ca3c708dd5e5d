# services.nix-snapshotter.rootless: the daemon as a systemd user service,
# inside the user namespace of rootless containerd
# (virtualisation.containerd.rootless).
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

  # One unit for every user, so the user's name is only known when it starts:
  # the config the daemon reads is the rendered one with the user's own GC-root
  # directory put first (inside the namespaces the daemon is uid 0, and its own
  # default would be root's gcroots directory; scripts/rootless/start.sh does
  # the same). A config that sets gc_roots_dir is copied as it is.
  perUserConfig = pkgs.writeShellApplication {
    name = "nix-snapshotter-rootless-config";
    runtimeInputs = [ pkgs.coreutils ];
    text = ''
      rendered="$(cat ${cfg.configFile})"
      case $'\n'"$rendered" in
        *$'\n'gc_roots_dir*) ;;
        *) rendered="gc_roots_dir = \"/nix/var/nix/gcroots/per-user/$USER/nix-snapshotter\""$'\n'"$rendered" ;;
      esac
      mkdir -p "$XDG_RUNTIME_DIR/nix-snapshotter"
      printf '%s\n' "$rendered" >"$XDG_RUNTIME_DIR/nix-snapshotter/config.toml"
    '';
  };
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
      systemd.user.services.nix-snapshotter = lib.mkMerge [
        (common.toNixosService (rootless.snapshotterService cfg nsenter))
        {
          path = common.servicePath cfg;
          # The store is root's: reach it through nix-daemon.
          environment.NIX_REMOTE = "daemon";
          serviceConfig = {
            ExecStartPre = "${perUserConfig}/bin/nix-snapshotter-rootless-config";
            ExecStart = lib.mkForce (
              "${nsenter}/bin/containerd-nsenter ${cfg.package}/bin/nix-snapshotter --config %t/nix-snapshotter/config.toml"
              + lib.optionalString (cfg.logLevel != null) " --log-level ${cfg.logLevel}"
            );
          };
        }
      ];
    })
  ];
}
