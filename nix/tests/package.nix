# Evaluates nix/package.nix against the stand-in (no nixpkgs here): the
# source filter, the pnpm dependency fetch arguments, the build and install
# scripts and the passthru. `newNixpkgs` passes fetchPnpmDeps/pnpmConfigHook
# the way nixpkgs >= 25.11 does; otherwise pnpm_10.fetchDeps/configHook are used.
{
  node,
  repo,
  newNixpkgs ? false,
}:
let
  pkgs = import ./stand-in/pkgs.nix { inherit node repo; };
  inherit (pkgs) lib;

  dummy =
    name:
    pkgs.runCommand name { } ''mkdir -p "$out/bin"''
    // {
      pname = name;
      meta.mainProgram = if name == "nodejs" then "node" else name;
    };

  recordFetch = kind: args: {
    inherit kind args;
    outPath = "/nix/store/00000000000000000000000000000000-pnpm-deps";
  };

  stdenv = pkgs.stdenv // {
    mkDerivation =
      fn:
      let
        attrs = fn (attrs // { finalPackage = result; });
        result = attrs // attrs.passthru;
      in
      result;
  };

  package = import ../package.nix (
    {
      inherit lib stdenv;
      inherit (pkgs)
        closureInfo
        runCommand
        writeText
        writeShellScriptBin
        nix
        git
        util-linux
        ;
      nodejs_24 = dummy "nodejs";
      pnpm_10 = dummy "pnpm" // {
        fetchDeps = recordFetch "pnpm_10.fetchDeps";
        configHook = "pnpm_10.configHook";
      };
      makeWrapper = dummy "makeWrapper";
    }
    // lib.optionalAttrs newNixpkgs {
      fetchPnpmDeps = recordFetch "fetchPnpmDeps";
      pnpmConfigHook = "pnpmConfigHook";
    }
  );

  # Relative paths of every file of the filtered source.
  listFiles =
    dir: prefix:
    builtins.concatLists (
      lib.mapAttrsToList (
        name: type:
        if type == "directory" then
          listFiles "${dir}/${name}" "${prefix}${name}/"
        else
          [ "${prefix}${name}" ]
      ) (builtins.readDir dir)
    );
in
{
  inherit (package) pname version buildPhase installPhase;
  srcFiles = listFiles package.src "";
  pnpmDeps = {
    inherit (package.pnpmDeps) kind;
    inherit (package.pnpmDeps.args)
      pname
      version
      fetcherVersion
      hash
      ;
  };
  configHook = builtins.elemAt package.nativeBuildInputs 2;
  buildImage = builtins.isFunction package.buildImage;
  mainProgram = package.meta.mainProgram;
}
