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
    home.packages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
    };
  };
}
