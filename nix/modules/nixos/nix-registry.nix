# services.nix-registry: the on-demand registry of nix images (apps/nix-registry)
# as a system service. Its settings are rendered to the TOML file the app reads
# with `--config`; docs/registry-server.md has every key.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.nix-registry;
  settingsFormat = pkgs.formats.toml { };

  keyFile = cfg.settings.binary_cache_secret_key_file;

  # TOML has no null: unset optional keys are left out.
  renderedSettings = lib.filterAttrs (_: value: value != null) cfg.settings;

  # Directories the service writes, made (or given back) to its user before it starts.
  ownedDirectories = [
    cfg.settings.storage_path
    cfg.settings.gc_roots_dir
  ];
  absolute = path: builtins.match "/.*" path != null;
in
{
  options.services.nix-registry = {
    enable = lib.mkEnableOption "nix-registry, a read-only OCI registry that builds nix-snapshotter images from their names";

    package = lib.mkPackageOption pkgs "nix-registry" { };

    path = mkOption {
      type = types.listOf types.package;
      default = [ pkgs.nix ];
      defaultText = lib.literalExpression "[ pkgs.nix ]";
      description = ''
        Packages on the service's PATH, before the package's own (its wrapper
        appends Nix, git and util-linux). Put the system's Nix here so the
        registry builds with the same Nix as the machine's daemon.
      '';
    };

    user = mkOption {
      type = types.str;
      default = "nix-registry";
      description = ''
        User the registry runs as. The default user (and its group) is created
        as a system user. It builds through the Nix daemon, so on a multi-user
        Nix install any user works (add it to `nix.settings.trusted-users` only
        if the registry's Nix must use substituters the daemon does not trust);
        with a single-user Nix install (no daemon) it must be the store's
        owner, usually `root`.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "nix-registry";
      description = "Group the registry runs as (created with the default user).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `settings.port` (TCP) in the firewall.";
    };

    settings = mkOption {
      default = { };
      description = ''
        The registry's config.toml as Nix attributes (docs/registry-server.md,
        "Configuration"). The keys below are typed; any other key is written as
        it is (the registry refuses keys it does not know).
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          host = mkOption {
            type = types.str;
            default = "0.0.0.0";
            example = "127.0.0.1";
            description = "Address to listen on (`0.0.0.0`, `::`, `127.0.0.1`).";
          };
          port = mkOption {
            type = types.port;
            default = 8080;
            description = "TCP port of the registry (and of the binary cache, when exported).";
          };
          pkgs_path = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/etc/nix-registry/pkgs";
            description = ''
              The package set: a Nix file, or a directory with `default.nix`
              (a nixpkgs checkout works as it is). Exactly one of `pkgs_path`
              and `pkgs_repo` must be set.
            '';
          };
          pkgs_repo = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "https://example.org/my/pkgs.git";
            description = ''
              Or a git repository with `default.nix` at its root; image tags
              name its branches (`latest` is HEAD). Fetched by the service's
              Nix with the service user's git credentials.
            '';
          };
          nix_timeout = mkOption {
            type = types.ints.positive;
            default = 60;
            description = "Seconds the Nix steps of one image may take (Nixery's `NIX_TIMEOUT`).";
          };
          storage_path = mkOption {
            type = types.str;
            default = "/var/lib/nix-registry";
            description = "Where manifests, blobs and the exported binary cache are stored (`STORAGE_PATH`).";
          };
          gc_roots_dir = mkOption {
            type = types.str;
            default = "/nix/var/nix/gcroots/nix-registry";
            description = ''
              GC roots of the served images' closures; must be below
              `/nix/var/nix/gcroots/`. Made and given to the service's user
              before each start.
            '';
          };
          binary_cache = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Export every image's closure to a signed binary cache under
              `storage_path` and serve it beside the registry API
              (`/nix-cache-info`, `/<hash>.narinfo`, `/nar/...`). Needs
              `binary_cache_secret_key_file`.
            '';
          };
          binary_cache_secret_key_file = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/etc/nix-registry/binary-cache.sec";
            description = ''
              Secret key (`nix-store --generate-binary-cache-key`) that signs
              the narinfos. Only its path is written to the configuration (the
              key is never copied to the Nix store); the service's user must be
              able to read it (e.g. `root:nix-registry`, mode 0640). Nodes trust
              the matching public key.
            '';
          };
        };
      };
    };

    configFile = mkOption {
      type = types.path;
      description = ''
        The rendered configuration file passed to `nix-registry --config`
        (default: `settings` as TOML). Set it to use a file of your own.
      '';
    };
  };

  config = lib.mkMerge [
    {
      services.nix-registry.configFile = lib.mkOptionDefault (
        settingsFormat.generate "nix-registry.toml" renderedSettings
      );
    }
    (lib.mkIf cfg.enable {
      assertions = [
        {
          assertion = (cfg.settings.pkgs_path == null) != (cfg.settings.pkgs_repo == null);
          message = "services.nix-registry: set exactly one of settings.pkgs_path and settings.pkgs_repo";
        }
        {
          assertion = !cfg.settings.binary_cache || keyFile != null;
          message = "services.nix-registry: settings.binary_cache needs settings.binary_cache_secret_key_file";
        }
        {
          assertion = keyFile == null || (absolute keyFile && !lib.hasPrefix "/nix/store/" keyFile);
          message = "services.nix-registry: settings.binary_cache_secret_key_file must be an absolute path outside the Nix store";
        }
        {
          assertion = lib.hasPrefix "/nix/var/nix/gcroots/" cfg.settings.gc_roots_dir;
          message = "services.nix-registry: settings.gc_roots_dir must be below /nix/var/nix/gcroots/";
        }
        {
          assertion = absolute cfg.settings.storage_path;
          message = "services.nix-registry: settings.storage_path must be an absolute path";
        }
      ];

      users.users = lib.optionalAttrs (cfg.user == "nix-registry") {
        nix-registry = {
          isSystemUser = true;
          inherit (cfg) group;
          description = "nix-registry service user";
        };
      };
      users.groups = lib.optionalAttrs (cfg.group == "nix-registry") { nix-registry = { }; };

      networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.settings.port;

      systemd.services.nix-registry = {
        description = "nix-registry - nix images built on demand from their names";
        wantedBy = [ "multi-user.target" ];
        after = [
          "network.target"
          "nix-daemon.service"
        ];
        inherit (cfg) path;
        environment = {
          # Nix's fetchGit cache and git's files: the cache directory below.
          HOME = "%C/nix-registry";
          XDG_CACHE_HOME = "%C/nix-registry";
          NIX_REGISTRY_LOG_FORMAT = "json";
        };
        serviceConfig = {
          # Ready once started; the registry answers /v2/ as soon as it listens
          # (clients retry a refused connection).
          Type = "exec";
          ExecStartPre = map (
            directory:
            "+${pkgs.coreutils}/bin/install -d -m 0750 -o ${cfg.user} -g ${cfg.group} ${directory}"
          ) ownedDirectories;
          ExecStart = "${lib.getExe cfg.package} --config ${cfg.configFile}";
          User = cfg.user;
          Group = cfg.group;
          Restart = "on-failure";
          RestartSec = "2";
          # Nix processes are in their own process groups: stop them all.
          KillMode = "control-group";
          CacheDirectory = "nix-registry";
          NoNewPrivileges = true;
          PrivateTmp = true;
          ProtectHome = true;
          LimitNOFILE = 65536;
        };
      };
    })
  ];
}
