# virtualisation.containerd.rootless: options and settings shared by the
# NixOS and home-manager modules (the units are added by each of them).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.virtualisation.containerd.rootless;
  common = import ./lib.nix { inherit lib pkgs; };
  rootless = import ./rootless.nix { inherit lib pkgs; };
  snapshotterAddress =
    config.services.nix-snapshotter.rootless.settings.address or common.defaultAddress;
in
{
  options.virtualisation.containerd.rootless = common.containerdOptions // {
    enable = lib.mkEnableOption ''
      containerd for one user without root privileges (rootlesskit and
      slirp4netns), as a systemd user service. Clients need
      `CONTAINERD_ADDRESS=$XDG_RUNTIME_DIR/containerd/containerd.sock`'';

    package = lib.mkPackageOption pkgs "containerd" { };

    settings = lib.mkOption {
      type = common.settingsFormat.type;
      default = { };
      description = "containerd's config.toml as Nix attributes.";
    };

    args = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      description = "Flags added to containerd's command line (`--name value`).";
    };

    bindMounts = lib.mkOption {
      type = lib.types.attrsOf (
        lib.types.submodule {
          options.mountPoint = lib.mkOption {
            type = lib.types.str;
            example = "/run/containerd";
            description = "Where the source directory is mounted inside the rootless namespace.";
          };
        }
      );
      default = { };
      example = lib.literalExpression ''{ "$XDG_RUNTIME_DIR/containerd".mountPoint = "/run/containerd"; }'';
      description = ''
        Directories of the user (the attribute names, which may use
        `$XDG_RUNTIME_DIR`, `$XDG_DATA_HOME`, `$XDG_CONFIG_HOME`) bind-mounted
        over system paths inside the rootless namespace, so that sockets and
        state there are reachable from the host.
      '';
    };

    network = lib.mkOption {
      type = lib.types.enum [
        "slirp4netns"
        "host"
      ];
      default = "slirp4netns";
      description = ''
        rootlesskit's network (scripts/rootless/start.sh's `ROOTLESSKIT_NET`).
        `slirp4netns`: containers get a network namespace of their own with a
        user-mode TCP/IP stack (needs `/dev/net/tun` usable by the user, as it
        is on ordinary distributions); the host's loopback is not reachable
        from it. `host`: containerd and containers share the host's network
        namespace (no `/dev/net/tun` needed; containers see every service on
        the host's loopback, so this is weaker isolation).
      '';
    };

    nsenter = lib.mkOption {
      type = lib.types.package;
      default = rootless.nsenter;
      defaultText = "containerd-nsenter";
      description = "Program that runs a command inside rootless containerd's namespaces.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        virtualisation.containerd.rootless = {
          setAddress = lib.mkDefault "$XDG_RUNTIME_DIR/containerd/containerd.sock";
          args.config = toString (common.renderSettings "containerd.toml" cfg.settings);
          settings = lib.mkMerge [
            (common.containerdBaseSettings cfg)
            {
              plugins."io.containerd.grpc.v1.cri" = {
                disable_apparmor = lib.mkDefault true;
                disable_cgroup = lib.mkDefault true;
                restrict_oom_score_adj = lib.mkDefault true;
              };
              # containerd 2.x's CRI starts NRI, whose socket /run/nri/nri.sock is the
              # real root's directory when the host has one (copy-up leaves a link to
              # it): "bind: permission denied" stops containerd (measured with 2.1.9).
              # 1.7 has NRI disabled by default.
              plugins."io.containerd.nri.v1.nri".disable = lib.mkDefault true;
            }
          ];
          bindMounts = {
            "$XDG_RUNTIME_DIR/containerd".mountPoint = "/run/containerd";
            "$XDG_DATA_HOME/containerd".mountPoint = "/var/lib/containerd";
            "$XDG_DATA_HOME/cni".mountPoint = "/var/lib/cni";
            "$XDG_CONFIG_HOME/cni".mountPoint = "/etc/cni";
          };
        };
      }
      (lib.mkIf cfg.nixSnapshotterIntegration {
        virtualisation.containerd.rootless = {
          # fuse-overlayfs mounts are made by containerd's shim (through mount.fuse3).
          path = lib.optionals (config.services.nix-snapshotter.rootless.settings.fuse_overlayfs or null == true) [
            pkgs.fuse3
            pkgs.fuse-overlayfs
          ];
          setSnapshotter = lib.mkDefault "nix";
          settings = common.nixSnapshotterContainerdSettings snapshotterAddress;
          bindMounts = {
            "$XDG_RUNTIME_DIR/nix-snapshotter".mountPoint = "/run/nix-snapshotter";
            "$XDG_DATA_HOME/nix-snapshotter".mountPoint = "/var/lib/containerd/io.containerd.snapshotter.v1.nix";
          };
        };
      })
      (lib.mkIf cfg.gVisorIntegration {
        virtualisation.containerd.rootless = {
          path = [ pkgs.gvisor ];
          settings = common.gVisorContainerdSettings;
        };
      })
    ]
  );
}
