# The nix-snapshotter package: the daemon (bin/nix-snapshotter), the CLI
# (bin/nix2container) and the on-demand registry (bin/nix-registry), built
# from the pnpm workspace with Node 24 in one build (one pnpm store, one
# install). The overlay's `nix-registry` is a small sibling holding only the
# registry's program (nix/registry-package.nix).
# passthru: buildImage, copyToRegistry, copyToContainerd (nix/build-image.nix).
#
# The pnpm dependencies are a fixed-output derivation whose hash
# scripts/pnpm-deps-hash.sh computes into nix/pnpm-deps-hash.nix (CI checks
# it is current for pnpm-lock.yaml). Override it with
# `nix-snapshotter.override { pnpmDepsHash = "sha256-..."; }` if your nixpkgs'
# pnpm stores it differently (docs/nix-interface.md, "The dependency hash").
{
  lib,
  stdenv,
  nodejs_24,
  pnpm_10,
  makeWrapper,
  nix,
  # The registry's runtime: Nix's builtins.fetchGit runs git (git package
  # sets), and util-linux's setpriv makes Nix processes die with the registry.
  git,
  util-linux,
  closureInfo,
  runCommand,
  writeText,
  writeShellScriptBin,
  # nixpkgs >= 25.11 has these at the top level; older ones under pnpm_10.
  fetchPnpmDeps ? pnpm_10.fetchDeps,
  pnpmConfigHook ? pnpm_10.configHook,
  # The fixed-output hash of the pnpm store (fetchPnpmDeps, fetcherVersion 2).
  pnpmDepsHash ? import ./pnpm-deps-hash.nix,
}:
let
  root = ../.;

  # Only what the build reads: no node_modules, dist or caches of a checkout.
  src = lib.cleanSourceWith {
    name = "nix-snapshotter-source";
    src = root;
    filter =
      path: type:
      let
        relative = lib.removePrefix (toString root + "/") (toString path);
        base = baseNameOf path;
        topLevel = builtins.head (lib.splitString "/" relative);
      in
      !(builtins.elem base [
        "node_modules"
        "dist"
        ".turbo"
        ".toolchain"
        "coverage"
        ".git"
      ])
      && builtins.elem topLevel [
        "package.json"
        "pnpm-lock.yaml"
        "pnpm-workspace.yaml"
        "tsconfig.base.json"
        "tsconfig.json"
        # Every package's and app's tsup.config.ts imports it.
        "tsup.base.ts"
        "packages"
        "apps"
        "bench"
      ];
  };

  version = (lib.importJSON ../apps/nix-snapshotter/package.json).version;
in
stdenv.mkDerivation (finalAttrs: {
  pname = "nix-snapshotter";
  inherit version src;

  pnpmDeps = fetchPnpmDeps {
    inherit (finalAttrs) pname version src;
    pnpm = pnpm_10;
    fetcherVersion = 2;
    hash = pnpmDepsHash;
  };

  nativeBuildInputs = [
    nodejs_24
    pnpm_10
    pnpmConfigHook
    makeWrapper
  ];

  # The apps and the packages they use, in dependency order (tsup in each).
  buildPhase = ''
    runHook preBuild
    pnpm --filter "nix-snapshotter..." --filter "nix2container..." --filter "nix-registry..." run build
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall

    # Keep only production dependencies, then ship the workspace as it is:
    # the apps resolve @nix-snapshotter/* through pnpm's workspace links.
    rm -rf node_modules packages/*/node_modules apps/*/node_modules bench/node_modules
    CI=true pnpm install --offline --prod --frozen-lockfile --ignore-scripts \
      --filter "nix-snapshotter..." --filter "nix2container..." --filter "nix-registry..."

    lib_dir=$out/lib/nix-snapshotter
    mkdir -p "$lib_dir" "$out/bin"
    cp -r package.json pnpm-workspace.yaml node_modules packages apps "$lib_dir/"
    find "$lib_dir/packages" "$lib_dir/apps" -maxdepth 2 -name src -type d -prune -exec rm -rf {} +
    # The registry's fixed Nix expressions (apps/nix-registry/nix) stay beside its dist.

    for app in nix-snapshotter nix2container; do
      # The daemon's Node flags: apps/nix-snapshotter/src/node-flags.ts says why.
      node_flags=""
      if [ "$app" = nix-snapshotter ]; then node_flags="--max-semi-space-size=4 "; fi
      makeWrapper ${lib.getExe nodejs_24} "$out/bin/$app" \
        --add-flags "$node_flags$lib_dir/apps/$app/dist/main.js" \
        --suffix PATH : ${lib.makeBinPath [ nix ]}
    done

    # The registry runs nix-instantiate, nix-build, nix-store and nix copy; Nix
    # runs git for a git package set; setpriv ties Nix processes to the registry.
    makeWrapper ${lib.getExe nodejs_24} "$out/bin/nix-registry" \
      --add-flags "$lib_dir/apps/nix-registry/dist/main.js" \
      --suffix PATH : ${
        lib.makeBinPath [
          nix
          git
          util-linux
        ]
      }

    runHook postInstall
  '';

  passthru =
    let
      images = import ./build-image.nix {
        inherit
          lib
          stdenv
          runCommand
          closureInfo
          writeText
          writeShellScriptBin
          ;
        nix-snapshotter = finalAttrs.finalPackage;
      };
    in
    {
      inherit (images) buildImage copyToRegistry copyToContainerd;
    };

  meta = {
    description = "containerd snapshotter that takes container packages from the Nix store (TypeScript)";
    license = lib.licenses.mit;
    mainProgram = "nix-snapshotter";
    platforms = lib.platforms.linux;
  };
})
