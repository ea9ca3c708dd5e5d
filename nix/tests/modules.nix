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
  # A built nix-registry package's store path (nix/tests/package-build.nix's
  # `registry`), used as services.nix-registry.package by `registryUnitFile`.
  registryPackage ? null,
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
    ]
    ++ lib.optional (registryPackage != null) {
      # The built package itself (as nixpkgs' types.package makes of a store path).
      services.nix-registry.package = {
        type = "derivation";
        name = "nix-registry";
        outPath = builtins.storePath registryPackage;
        meta.mainProgram = "nix-registry";
      };
    };
    specialArgs = { inherit pkgs; };
  };

  inherit (evaluated) config options;

  units = if kind == "nixos" then config.systemd.services else { };
  userUnits = config.systemd.user.services;

  # nixpkgs stops the system's build at the first failed assertion, with its message.
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) (config.assertions or [ ]));
  checked =
    assert evaluated.check;
    if failedAssertions == [ ] then
      true
    else
      throw "Failed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failedAssertions}";

  # A NixOS unit's file as nixpkgs writes it (nixos/lib/systemd-lib.nix, reduced to
  # the option kinds our units use): [Unit] from description and the dependency
  # lists plus unitConfig, [Service] with Environment= lines (PATH from `path`'s
  # bin and sbin, then `environment`) and serviceConfig (a list is one line per
  # element, a bool is true/false), [Install] from wantedBy.
  unitFile =
    name:
    let
      unit = config.systemd.services.${name};
      value = v: if builtins.isBool v then (if v then "true" else "false") else toString v;
      lines =
        attrs:
        lib.concatMap (
          key:
          map (v: "${key}=${value v}") (lib.toList attrs.${key})
        ) (builtins.attrNames attrs);
      environment = {
        PATH = lib.concatStringsSep ":" (map (p: "${p}/bin:${p}/sbin") unit.path);
      }
      // unit.environment;
      quote = s: "\"" + builtins.replaceStrings [ "\\" "\"" ] [ "\\\\" "\\\"" ] s + "\"";
    in
    assert checked;
    pkgs.writeText "${name}.service" (
      lib.concatStringsSep "\n" (
        [ "[Unit]" ]
        ++ lib.optional (unit.description != "") "Description=${unit.description}"
        ++ lib.optional (unit.after != [ ]) "After=${toString unit.after}"
        ++ lib.optional (unit.before != [ ]) "Before=${toString unit.before}"
        ++ lib.optional (unit.wants != [ ]) "Wants=${toString unit.wants}"
        ++ lib.optional (unit.requires != [ ]) "Requires=${toString unit.requires}"
        ++ lib.optional (unit.partOf != [ ]) "PartOf=${toString unit.partOf}"
        ++ lines unit.unitConfig
        ++ [
          ""
          "[Service]"
        ]
        ++ lib.mapAttrsToList (k: v: "Environment=${quote "${k}=${v}"}") environment
        ++ lines unit.serviceConfig
        ++ [
          ""
          "[Install]"
        ]
        ++ lib.optional (unit.wantedBy != [ ]) "WantedBy=${toString unit.wantedBy}"
      )
      + "\n"
    );
in
{
  inherit config options;

  registryUnitFile = unitFile "nix-registry";
  # What services.nix-registry sets besides its unit.
  registryFacts = assert checked; {
    inherit (config) users;
    ports = config.networking.firewall.allowedTCPPorts;
    environment = config.systemd.services.nix-registry.environment or { };
  };
  registryConfig = config.services.nix-registry.configFile;

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

  summary = assert checked; {
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
