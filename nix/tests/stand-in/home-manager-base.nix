# TEST DOUBLE: declarations of the home-manager options that our home
# modules define.
{ lib, ... }:
{
  options = {
    systemd.user.services = lib.mkOption {
      type = lib.types.attrsOf (lib.types.attrsOf lib.types.anything);
      default = { };
    };
    home.sessionVariablesExtra = lib.mkOption {
      type = lib.types.lines;
      default = "";
    };
    # Real home-manager has no default: every user sets it. The stand-in gives one.
    home.username = lib.mkOption {
      type = lib.types.str;
      default = "alice";
    };
    home.packages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
    };
  };
}
