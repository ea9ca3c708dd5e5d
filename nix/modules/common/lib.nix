# Shared pieces of the NixOS and home-manager modules: option declarations,
# the nix-snapshotter settings submodule, systemd units written once in
# home-manager's shape ({ Unit, Service, Install }) and converted for NixOS,
# and the containerd settings that wire the nix snapshotter in.
{ lib, pkgs }:
let
  inherit (lib) mkOption types;

  platform = import ../../platform.nix;

  settingsFormat = pkgs.formats.toml { };

  defaultAddress = "/run/nix-snapshotter/nix-snapshotter.sock";

  # TOML has no null: unset optional keys are left out of the file.
  renderSettings =
    name: settings: settingsFormat.generate name (lib.filterAttrsRecursive (_: v: v != null) settings);

  settingsSubmodule = types.submodule {
    freeformType = settingsFormat.type;
    options = {
      address = mkOption {
        type = types.str;
        default = defaultAddress;
        description = ''
          Unix socket on which nix-snapshotter serves containerd's snapshots API
          (and the CRI image service when `image_service.enable` is true).
          containerd's `proxy_plugins.nix.address` and k3s'
          `--image-service-endpoint` are set from it.
        '';
      };
      root = mkOption {
        type = types.str;
        default = "/var/lib/containerd/io.containerd.snapshotter.v1.nix";
        description = "Directory holding the snapshots and their metadata.";
      };
      external_builder = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/nix-snapshotter/build-remote";
        description = ''
          Program that realises a missing store path instead of Nix itself,
          run as `<program> <out-link> <store path>` (an absolute path or a
          command on the service's PATH). Unset: the daemon realises through
          Nix.
        '';
      };
      image_service = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Serve the CRI image service on `address`: the kubelet (or k3s with
            `--image-service-endpoint`) then pulls `nix:0/nix/store/...`
            references through Nix, and every other reference through
            containerd.
          '';
        };
        containerd_address = mkOption {
          type = types.str;
          default = "/run/containerd/containerd.sock";
          description = "containerd's socket, used by the CRI image service to import and pull images.";
        };
      };
      mount_mode = mkOption {
        type = types.nullOr (
          types.enum [
            "bind"
            "hardlink"
          ]
        );
        default = null;
        example = "hardlink";
        description = ''
          How store paths reach a container's root file system. `bind`: one
          read-only bind mount per store path (the Go nix-snapshotter's way;
          needs containerd >= 1.7, whose mounts honour `target`). `hardlink`:
          the store paths' files are hard-linked into the nix layer's snapshot
          when it is committed, so containers get a single overlay mount (works
          with containerd 1.6, and keeps the mount table small). Unset: the
          daemon's default (`bind`).
        '';
      };
      store_dir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/nix/store";
        description = "The Nix store directory. Unset: the daemon's default (`/nix/store`).";
      };
      gc_roots_dir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/nix/var/nix/gcroots/nix-snapshotter";
        description = ''
          Directory under which the daemon keeps a GC root for every store path
          used by a snapshot. Unset: the daemon's default.
        '';
      };
      fuse_overlayfs = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = ''
          Mount snapshots with fuse-overlayfs instead of the kernel's overlayfs
          (for rootless use on kernels without unprivileged overlayfs). When
          true, fuse-overlayfs is added to the service's PATH.
        '';
      };
      metrics_address = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:9153";
        description = "Address (host:port) on which Prometheus metrics are served. Unset: no metrics.";
      };
      realise_timeout = mkOption {
        type = types.nullOr (types.strMatching "0|([0-9]+(\\.[0-9]+)?(ms|h|m|s))+");
        default = null;
        example = "10m";
        description = ''
          Longest one realise of Nix store paths may take (a nix layer's
          Prepare, a `nix:0` pull's archive), as a duration such as `"90s"`,
          `"10m"` or `"1h30m"`; Nix is then stopped and the call fails with
          DeadlineExceeded. `"0"` or unset: no limit beyond the caller's own
          deadline.
        '';
      };
    };
  };

  # Options common to services.nix-snapshotter and services.nix-snapshotter.rootless.
  snapshotterOptions = {
    package = lib.mkPackageOption pkgs "nix-snapshotter" { };

    path = mkOption {
      type = types.listOf types.package;
      default = [ pkgs.nix ];
      defaultText = lib.literalExpression "[ pkgs.nix ]";
      description = ''
        Packages on the service's PATH. Nix must be among them: the daemon
        runs `nix-store` to realise and register store paths.
      '';
    };

    settings = mkOption {
      type = settingsSubmodule;
      default = { };
      description = ''
        nix-snapshotter's config.toml as Nix attributes. The keys below are
        known and typed; any other key is written as it is (the daemon rejects
        keys it does not know).
      '';
    };

    logLevel = mkOption {
      type = types.nullOr (
        types.enum [
          "trace"
          "debug"
          "info"
          "warn"
          "error"
          "fatal"
          "panic"
        ]
      );
      default = null;
      example = "debug";
      description = "The daemon's `--log-level`. Unset: the daemon's default (`info`).";
    };

    configFile = mkOption {
      type = types.path;
      description = ''
        Path of nix-snapshotter's config file. Defaults to a file rendered from
        `settings`; setting it makes `settings` unused.
      '';
    };
  };

  # home-manager unit shape -> NixOS systemd.services entry.
  toNixosService =
    unit:
    lib.mkMerge [
      (lib.mkIf (unit ? Service) { serviceConfig = unit.Service; })
      (lib.mkIf (unit ? Unit) { unitConfig = unit.Unit; })
      (lib.mkIf (unit ? Install.WantedBy) { wantedBy = unit.Install.WantedBy; })
    ];

  snapshotterServiceBase = {
    Service = {
      Type = "notify";
      # The daemon may report readiness through a helper process
      # (systemd-notify), which systemd only accepts with NotifyAccess=all.
      NotifyAccess = "all";
      Restart = "always";
      RestartSec = "2";
      Delegate = "yes";
      KillMode = "mixed";
      StateDirectory = "nix-snapshotter";
      RuntimeDirectory = "nix-snapshotter";
      RuntimeDirectoryPreserve = "yes";
    };
  };

  # systemd-notify: the daemon reports readiness through it (Node cannot send
  # unix datagrams). home-manager units get no PATH of their own otherwise.
  servicePath =
    cfg:
    cfg.path
    ++ [ pkgs.systemd ]
    ++ lib.optional (cfg.settings.fuse_overlayfs or null == true) pkgs.fuse-overlayfs;

  execStart =
    cfg:
    "${cfg.package}/bin/nix-snapshotter --config ${cfg.configFile}"
    + lib.optionalString (cfg.logLevel or null != null) " --log-level ${cfg.logLevel}";

  # Settings that make containerd use nix-snapshotter (config version 2, which
  # containerd 1.6, 1.7 and 2.x all read; 2.x migrates it).
  nixSnapshotterContainerdSettings = address: {
    plugins."io.containerd.grpc.v1.cri".containerd.snapshotter = "nix";
    # containerd 2.x does not carry the key above over to its CRI images
    # plugin when it migrates a version 2 file (measured with 2.1.9: CRI kept
    # overlayfs); it reads this section of the same file. 1.6 and 1.7 ignore it.
    plugins."io.containerd.cri.v1.images".snapshotter = "nix";
    plugins."io.containerd.transfer.v1.local".unpack_config = [
      {
        platform = platform.ociPlatform pkgs.stdenv.hostPlatform;
        snapshotter = "nix";
      }
    ];
    proxy_plugins.nix = {
      type = "snapshot";
      inherit address;
    };
  };

  containerdBaseSettings = cfg: {
    version = lib.mkDefault 2;
    plugins."io.containerd.grpc.v1.cri" = {
      cni.bin_dir = lib.mkOptionDefault "${pkgs.cni-plugins}/bin";
      containerd = {
        default_runtime_name = cfg.defaultRuntime;
        runtimes.runc.runtime_type = lib.mkDefault "io.containerd.runc.v2";
      };
    };
  };

  # CRI settings k3s expects of the containerd it runs on (k3s' own containerd
  # template for a rootful node): its CNI config directory and plugins
  # (including flannel, k3s' default network), the sandbox image it ships, the
  # stream server on 127.0.0.1:10010. Version 2 keys; containerd 2.x migrates
  # them (2.1.9: to cri.v1.runtime, cri.v1.images.pinned_images, grpc.v1.cri).
  # The rootless-only keys of that template (disable_cgroup, disable_apparmor,
  # restrict_oom_score_adj) are left out: on a rootful node they would drop
  # resource limits and AppArmor. See docs/k3s.md.
  k3sContainerdSettings =
    let
      cniBin = "${
        pkgs.buildEnv {
          name = "k3s-cni-plugins";
          paths = [
            pkgs.cni-plugins
            pkgs.cni-plugin-flannel
          ];
        }
      }/bin";
      cniConf = "/var/lib/rancher/k3s/agent/etc/cni/net.d/";
      sandbox = "rancher/mirrored-pause:3.6";
    in
    {
      plugins."io.containerd.grpc.v1.cri" = {
        stream_server_address = lib.mkDefault "127.0.0.1";
        stream_server_port = lib.mkDefault "10010";
        enable_selinux = lib.mkDefault false;
        enable_unprivileged_ports = lib.mkDefault true;
        enable_unprivileged_icmp = lib.mkDefault true;
        sandbox_image = lib.mkDefault sandbox;
        cni = {
          conf_dir = lib.mkDefault cniConf;
          bin_dir = lib.mkDefault cniBin;
        };
      };
      # The same for a version 3 file (containerd 2.x's layout; a version 2
      # file with both is read the same way by 2.1.9, and 1.6/1.7 ignore these).
      plugins."io.containerd.cri.v1.runtime" = {
        enable_selinux = lib.mkDefault false;
        enable_unprivileged_ports = lib.mkDefault true;
        enable_unprivileged_icmp = lib.mkDefault true;
        cni = {
          conf_dir = lib.mkDefault cniConf;
          bin_dirs = lib.mkDefault [ cniBin ];
        };
      };
      plugins."io.containerd.cri.v1.images".pinned_images.sandbox = lib.mkDefault sandbox;
    };

  gVisorContainerdSettings = {
    plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.runtime_type = "io.containerd.runsc.v1";
  };

  # Shell lines exporting CONTAINERD_* for interactive shells when unset.
  containerdEnvironment =
    cfg:
    ''
      if [ -z "''${CONTAINERD_ADDRESS-}" ]; then
        export CONTAINERD_ADDRESS="${cfg.setAddress}"
      fi
    ''
    + lib.optionalString (cfg.setNamespace != "default") ''
      if [ -z "''${CONTAINERD_NAMESPACE-}" ]; then
        export CONTAINERD_NAMESPACE="${cfg.setNamespace}"
      fi
    ''
    + lib.optionalString (cfg.setSnapshotter != "") ''
      if [ -z "''${CONTAINERD_SNAPSHOTTER-}" ]; then
        export CONTAINERD_SNAPSHOTTER="${cfg.setSnapshotter}"
      fi
    '';

  # Options added to virtualisation.containerd and virtualisation.containerd.rootless.
  containerdOptions = {
    nixSnapshotterIntegration = lib.mkEnableOption ''
      the nix snapshotter in containerd: the `nix` proxy snapshotter plugin,
      `nix` as the CRI snapshotter and as the Transfer service's unpack
      snapshotter for the host platform'';

    gVisorIntegration = lib.mkEnableOption "the gVisor (runsc) runtime in containerd's CRI";

    defaultRuntime = mkOption {
      type = types.str;
      default = "runc";
      description = "containerd CRI's default runtime name.";
    };

    path = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Packages added to containerd's PATH.";
    };

    setAddress = mkOption {
      type = types.str;
      default = "/run/containerd/containerd.sock";
      description = "Value exported as `CONTAINERD_ADDRESS` in shells that have not set it.";
    };

    setNamespace = mkOption {
      type = types.str;
      default = "default";
      description = ''
        Value exported as `CONTAINERD_NAMESPACE` in shells that have not set it
        (nothing is exported for "default").
      '';
    };

    setSnapshotter = mkOption {
      type = types.str;
      default = "";
      description = ''
        Value exported as `CONTAINERD_SNAPSHOTTER` in shells that have not set
        it (nothing is exported when empty). Set to "nix" by
        `nixSnapshotterIntegration`.
      '';
    };
  };

  preloadTargetType = defaultAddress: types.submodule {
    options = {
      archives = mkOption {
        type = types.listOf types.package;
        default = [ ];
        description = "Image archives (e.g. from `buildImage`) imported into this containerd.";
      };
      address = mkOption {
        type = types.str;
        default = defaultAddress;
        description = ''
          containerd socket of this target (double-quoted in the script, so
          `$XDG_RUNTIME_DIR` expands).
        '';
      };
      namespace = mkOption {
        type = types.str;
        default = "default";
        description = "containerd namespace the images are imported into (`k8s.io` for Kubernetes).";
      };
    };
  };

  # The rootless variant defaults to rootless containerd's socket as seen from the host.
  preloadOptions = rootless: {
    enable = lib.mkEnableOption "importing image archives into containerd at boot";

    package = lib.mkPackageOption pkgs "nix-snapshotter" { } // {
      description = "The package whose `nix2container` imports the archives.";
    };

    targets = mkOption {
      type = types.listOf (
        preloadTargetType (
          if rootless then "$XDG_RUNTIME_DIR/containerd/containerd.sock" else "/run/containerd/containerd.sock"
        )
      );
      default = [ ];
      description = "containerd instances and the archives to import into each.";
    };
  };

  preloadService =
    cfg:
    let
      script = pkgs.writeShellScriptBin "preload-containerd" (
        lib.concatMapStringsSep "\n" (
          target:
          lib.concatMapStringsSep "\n" (archive: ''
            ${cfg.package}/bin/nix2container \
              --address "${target.address}" \
              --namespace "${target.namespace}" \
              load ${archive}
          '') target.archives
        ) cfg.targets
      );
    in
    {
      Unit = {
        Description = "Import image archives into containerd";
        Wants = [
          "containerd.service"
          "nix-snapshotter.service"
        ];
        After = [
          "containerd.service"
          "nix-snapshotter.service"
        ];
      };
      Service = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${script}/bin/preload-containerd";
      };
    };
in
{
  inherit
    containerdBaseSettings
    containerdEnvironment
    containerdOptions
    defaultAddress
    execStart
    gVisorContainerdSettings
    k3sContainerdSettings
    nixSnapshotterContainerdSettings
    preloadOptions
    preloadService
    renderSettings
    servicePath
    settingsFormat
    snapshotterOptions
    snapshotterServiceBase
    toNixosService
    ;
}
