# Rootless containerd (rootlesskit + slirp4netns) and the units that run
# inside its namespaces, in home-manager's unit shape.
{ lib, pkgs }:
let
  common = import ./lib.nix { inherit lib pkgs; };

  # Runs a command inside rootless containerd's user and mount namespaces (and its network
  # namespace when rootlesskit made one): scripts/rootless/nsenter.sh itself.
  nsenter = pkgs.writeShellApplication {
    name = "containerd-nsenter";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.util-linux
    ];
    text = lib.removePrefix "#!/usr/bin/env bash\n" (builtins.readFile ../../../scripts/rootless/nsenter.sh);
  };

  toArgs = args: lib.concatStringsSep " " (lib.mapAttrsToList (n: v: "--${n} ${lib.escapeShellArg v}") args);

  # The child runs in rootlesskit's namespaces as fake root: it bind-mounts
  # the per-user directories over the system paths containerd and
  # nix-snapshotter use, then becomes containerd. The same commands as the
  # inside half of scripts/rootless/start.sh (which the rootless e2e test
  # runs): copy-up leaves the host's entries as links to directories of the
  # real root, so a link at a mount point is replaced by a directory first.
  containerdChild =
    cfg:
    pkgs.writeShellApplication {
      name = "containerd-rootless-child";
      runtimeInputs = [
        cfg.package
        pkgs.coreutils
        pkgs.util-linux
        pkgs.runc
      ]
      ++ cfg.path;
      text = ''
        ${lib.concatStringsSep "\n" (
          map
            (mount: ''
              if [ -L "${mount.mountPoint}" ]; then rm -f "${mount.mountPoint}"; fi
              mkdir -p "${mount.mountPoint}"
              mount --bind "${mount.source}" "${mount.mountPoint}"
            '')
            # Parents before children (/var/lib/containerd before its nix directory).
            (
              builtins.sort (a: b: a.mountPoint < b.mountPoint) (
                lib.mapAttrsToList (source: mount: {
                  inherit source;
                  inherit (mount) mountPoint;
                }) cfg.bindMounts
              )
            )
        )}
        exec containerd ${toArgs cfg.args}
      '';
    };

  # rootlesskit's network flags, as scripts/rootless/start.sh passes them for ROOTLESSKIT_NET.
  networkFlags = {
    slirp4netns = "--net=slirp4netns --mtu=65520 --slirp4netns-sandbox=auto --slirp4netns-seccomp=auto --disable-host-loopback --port-driver=builtin";
    host = "--net=host";
  };

  containerdLauncher =
    cfg:
    pkgs.writeShellApplication {
      name = "containerd-rootless";
      runtimeInputs = [
        pkgs.coreutils
        pkgs.iproute2
        pkgs.rootlesskit
        pkgs.util-linux
      ]
      ++ lib.optional (cfg.network == "slirp4netns") pkgs.slirp4netns;
      text = ''
        : "''${XDG_RUNTIME_DIR:?XDG_RUNTIME_DIR must be set}"
        export XDG_DATA_HOME="''${XDG_DATA_HOME:-$HOME/.local/share}"
        export XDG_CONFIG_HOME="''${XDG_CONFIG_HOME:-$HOME/.config}"
        # newuidmap and newgidmap are setuid wrappers on NixOS.
        export PATH="$PATH:/run/wrappers/bin"
        ${lib.concatStringsSep "\n" (map (source: ''mkdir -p "${source}"'') (lib.attrNames cfg.bindMounts))}
        exec rootlesskit \
          --state-dir="$XDG_RUNTIME_DIR/containerd-rootless" \
          ${networkFlags.${cfg.network}} \
          --copy-up=/etc --copy-up=/run --copy-up=/var/lib \
          --propagation=rslave \
          ${containerdChild cfg}/bin/containerd-rootless-child
      '';
    };

  containerdService = cfg: {
    Unit = {
      Description = "containerd - container runtime (rootless)";
      ConditionUser = "!root";
      StartLimitBurst = "16";
      StartLimitIntervalSec = "120s";
    };
    Install.WantedBy = [ "default.target" ];
    Service = {
      Type = "notify";
      # containerd runs in a child of rootlesskit, not as the main process.
      NotifyAccess = "all";
      Delegate = "yes";
      Restart = "always";
      RestartSec = "10";
      ExecStart = "${containerdLauncher cfg}/bin/containerd-rootless";
      ExecReload = "${pkgs.procps}/bin/kill -s HUP $MAINPID";
      # Keep container shims alive across restarts of the daemon.
      KillMode = "process";
      StateDirectory = "containerd";
      RuntimeDirectory = "containerd";
      RuntimeDirectoryPreserve = "yes";
      LimitNOFILE = "infinity";
      LimitNPROC = "infinity";
      LimitCORE = "infinity";
      TasksMax = "infinity";
    };
  };

  snapshotterService = cfg: nsenterPackage: {
    Unit = {
      Description = "nix-snapshotter - containerd snapshotter that takes packages from the Nix store (rootless)";
      After = [ "containerd.service" ];
      PartOf = [ "containerd.service" ];
      Requires = [ "containerd.service" ];
    };
    Install.WantedBy = [ "default.target" ];
    Service = common.snapshotterServiceBase.Service // {
      ExecStart = "${nsenterPackage}/bin/containerd-nsenter ${common.execStart cfg}";
    };
  };

  preloadService =
    cfg:
    lib.recursiveUpdate (common.preloadService cfg) {
      Unit.Description = "Import image archives into rootless containerd";
      Install.WantedBy = [ "default.target" ];
    };
in
{
  inherit
    containerdService
    nsenter
    preloadService
    snapshotterService
    ;
}
