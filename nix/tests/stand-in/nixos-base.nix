# TEST DOUBLE: declarations of the nixpkgs NixOS options that our modules
# define or read (systemd units, environment, virtualisation.containerd,
# services.k3s), with nixpkgs' behaviour reduced to what the tests look at:
# containerd's config file is rendered from `settings` into `args.config`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  unitOptions = {
    description = mkOption {
      type = types.str;
      default = "";
    };
    wantedBy = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    after = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    before = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    wants = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    requires = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    partOf = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    path = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
    };
    serviceConfig = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    unitConfig = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
  };
  unitType = types.attrsOf (types.submodule { options = unitOptions; });
  cfg = config.virtualisation.containerd;
  settingsFormat = pkgs.formats.toml { };
in
{
  options = {
    systemd.services = mkOption {
      type = unitType;
      default = { };
    };
    systemd.user.services = mkOption {
      type = unitType;
      default = { };
    };
    # nixpkgs: a failed assertion stops the system's build with its message
    # (modules.nix checks them the same way).
    assertions = mkOption {
      type = types.listOf types.attrs;
      default = [ ];
    };
    users.users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            isSystemUser = mkOption {
              type = types.bool;
              default = false;
            };
            group = mkOption {
              type = types.str;
              default = "";
            };
            description = mkOption {
              type = types.str;
              default = "";
            };
          };
        }
      );
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (types.submodule { options = { }; });
      default = { };
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    environment.extraInit = mkOption {
      type = types.lines;
      default = "";
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    virtualisation.containerd = {
      enable = lib.mkEnableOption "containerd";
      settings = mkOption {
        type = settingsFormat.type;
        default = { };
      };
      configFile = mkOption {
        type = types.nullOr types.path;
        default = null;
      };
      args = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
    };
    services.k3s = {
      enable = lib.mkEnableOption "k3s";
      extraFlags = mkOption {
        type = types.str;
        default = "";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    virtualisation.containerd.args.config = toString (
      if cfg.configFile == null then settingsFormat.generate "containerd.toml" cfg.settings else cfg.configFile
    );
    systemd.services.containerd = {
      description = "containerd - container runtime";
      serviceConfig.ExecStart = "${pkgs.containerd}/bin/containerd --config ${cfg.args.config}";
    };
  };
}
