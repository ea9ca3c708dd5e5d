# Evaluates our NixOS or home-manager modules with the stand-in module system
# and nixpkgs, plus one test module. Attributes:
#   config / options  the evaluated configuration and option declarations
#   containerdConfig  containerd's rendered config file (a derivation)
#   snapshotterConfig nix-snapshotter's rendered config file (a derivation)
#   summary           JSON-friendly facts the tests assert on
{
  node,
  repo,
  kind ? "nixos",
  module ? { },
}:
let
  pkgs = import ./stand-in/pkgs.nix { inherit node repo; };
  inherit (pkgs) lib;
  common = import ../modules/common/lib.nix { inherit lib pkgs; };

  ours = if kind == "nixos" then import ../modules/nixos else import ../modules/home;
  base = if kind == "nixos" then ./stand-in/nixos-base.nix else ./stand-in/home-manager-base.nix;

  evaluated = lib.evalModules {
    modules = [
      base
      ours.default
      module
    ];
    specialArgs = { inherit pkgs; };
  };

  inherit (evaluated) config options;

  units = if kind == "nixos" then config.systemd.services else { };
  userUnits = config.systemd.user.services;
in
{
  inherit config options;

  # The same derivations the modules put into containerd's `--config`.
  containerdConfig =
    if kind == "nixos" then
      (pkgs.formats.toml { }).generate "containerd.toml" config.virtualisation.containerd.settings
    else
      common.renderSettings "containerd.toml" config.virtualisation.containerd.rootless.settings;

  snapshotterConfig =
    if kind == "nixos" then
      config.services.nix-snapshotter.configFile
    else
      config.services.nix-snapshotter.rootless.configFile;

  # The preload-containerd service's program, as a buildable derivation.
  preloadScript =
    pkgs.runCommand "preload-containerd-program"
      { program = config.systemd.services.preload-containerd.serviceConfig.ExecStart; }
      ''ln -s "$program" "$out"'';

  # The rootless programs (bash, checked with shellcheck by the stand-in).
  rootlessScripts =
    let
      rootless = import ../modules/common/rootless.nix { inherit lib pkgs; };
      cfg = config.virtualisation.containerd.rootless;
      service = rootless.containerdService cfg;
      launcher = builtins.head (builtins.split " " service.Service.ExecStart);
    in
    pkgs.runCommand "rootless-scripts" { inherit launcher; inherit (rootless) nsenter; } ''
      mkdir -p "$out"
      ln -s "$launcher" "$out/containerd-rootless"
      ln -s "$nsenter/bin/containerd-nsenter" "$out/containerd-nsenter"
    '';

  summary = assert evaluated.check; {
    inherit units userUnits;
    options = builtins.filter (o: !o.internal) (lib.optionList options);
    extraInit = if kind == "nixos" then config.environment.extraInit else config.home.sessionVariablesExtra;
    containerdArgs =
      if kind == "nixos" then
        config.virtualisation.containerd.args
      else
        config.virtualisation.containerd.rootless.args;
    k3sFlags = if kind == "nixos" then config.services.k3s.extraFlags else "";
  };
}
