# TEST DOUBLE: what nix/package.nix takes from nixpkgs to build, made so its
# build and install phases run for real with the host's programs:
# stdenv.mkDerivation (a small generic builder: unpack, configure hooks,
# buildPhase, installPhase), nodejs_24, pnpm_10, makeWrapper, and
# fetchPnpmDeps/pnpmConfigHook doing the steps of nixpkgs'
# pkgs/build-support/node/fetch-pnpm-deps. The one difference: no registry is
# reachable in tests, so the fetcher starts from `seedStore` (a pnpm store
# holding the lock file's packages, imported from the host's) and installs
# with --offline where nixpkgs downloads with --force. Its `hash` is not
# checked: scripts/check-pnpm-deps-hash.sh and scripts/pnpm-deps-hash.sh are
# about the hash. Never used outside nix/tests.
{
  # Node (>= 22.13) the Nix build users can run.
  node,
  # The pnpm npm package directory (bin/pnpm.cjs); imported into the store.
  pnpmPackage,
  # A pnpm store (its v10 directory's parent) with every package of
  # pnpm-lock.yaml for this platform; imported into the store.
  seedStore,
  system ? builtins.currentSystem,
}:
let
  hostPath = "/usr/bin:/bin";

  script =
    name: env: text:
    derivation (
      env
      // {
        inherit name system;
        builder = "/bin/bash";
        args = [
          "-c"
          ''export PATH=${hostPath}; set -euo pipefail; eval "$text"''
        ];
        inherit text;
      }
    );

  nodejs_24 =
    script "nodejs-stand-in" { inherit node; } ''
      mkdir -p "$out/bin"
      ln -s "$node" "$out/bin/node"
    ''
    // {
      pname = "nodejs";
      meta.mainProgram = "node";
    };

  pnpmSource = builtins.path {
    path = pnpmPackage;
    name = "pnpm-package";
  };

  pnpm_10 =
    script "pnpm-stand-in" { inherit pnpmSource; nodeBin = "${nodejs_24}/bin/node"; } ''
      mkdir -p "$out/bin"
      printf '#!/bin/bash\nexec %s %s/bin/pnpm.cjs "$@"\n' "$nodeBin" "$pnpmSource" > "$out/bin/pnpm"
      chmod 0555 "$out/bin/pnpm"
    ''
    // {
      pname = "pnpm";
      version = (builtins.fromJSON (builtins.readFile "${pnpmPackage}/package.json")).version;
    };

  seed = builtins.path {
    path = seedStore;
    name = "pnpm-seed-store";
    # What nixpkgs' fetcher removes, and what is being written right now.
    filter =
      path: _type:
      !(builtins.elem (baseNameOf path) [
        "tmp"
        "projects"
      ]);
  };

  # A setup hook: sourced by the generic builder below for each nativeBuildInput.
  setupHook =
    name: text:
    script name { hook = text; } ''
      mkdir -p "$out/nix-support"
      printf '%s\n' "$hook" > "$out/nix-support/setup-hook"
    '';

  # nixpkgs' pnpmConfigHook steps, run after configure.
  pnpmConfigHook = setupHook "pnpm-config-hook-stand-in" ''
    pnpmConfigHook() {
      echo "Executing pnpmConfigHook (stand-in)"
      pushd "$HOME" >/dev/null
      pnpm config set manage-package-manager-versions false
      popd >/dev/null
      fetcherVersion=$(cat "$pnpmDeps/.fetcher-version" || echo 1)
      echo "Using fetcherVersion: $fetcherVersion"
      STORE_PATH=$(mktemp -d)
      export STORE_PATH
      export npm_config_arch=x64 pnpm_config_arch=x64
      export npm_config_platform=linux pnpm_config_platform=linux
      cp -Tr "$pnpmDeps" "$STORE_PATH"
      chmod -R +w "$STORE_PATH"
      pnpm config set store-dir "$STORE_PATH"
      pnpm config set package-import-method clone-or-copy
      pnpm install --offline --ignore-scripts --frozen-lockfile
      echo "Finished pnpmConfigHook"
    }
    postConfigureHooks+=(pnpmConfigHook)
  '';

  # nixpkgs' makeWrapper for the flags package.nix uses (--add-flags, --suffix).
  makeWrapper = setupHook "make-wrapper-stand-in" ''
    makeWrapper() {
      local executable=$1 wrapper=$2 flags="" env_lines=""
      shift 2
      while [ $# -gt 0 ]; do
        case "$1" in
          --add-flags) flags="$flags $2"; shift 2 ;;
          --suffix)
            env_lines+=$(printf '\nexport %s=''${%s:+$%s%s}%s' "$2" "$2" "$2" "$3" "$4")
            shift 4 ;;
          *) echo "makeWrapper (stand-in): unsupported flag $1" >&2; return 1 ;;
        esac
      done
      mkdir -p "$(dirname "$wrapper")"
      printf '#!/bin/bash%s\nexec %s%s "$@"\n' "$env_lines" "$executable" "$flags" > "$wrapper"
      chmod 0555 "$wrapper"
    }
  '';

  fetchPnpmDeps =
    {
      pname,
      version,
      src,
      pnpm,
      fetcherVersion,
      hash,
      ...
    }:
    script "${pname}-pnpm-deps"
      {
        inherit src seed;
        fetcherVersion = toString fetcherVersion;
        pnpmBin = "${pnpm}/bin";
        nodeBin = "${nodejs_24}/bin";
        # Recorded only (see the header).
        expectedHash = hash;
      }
      ''
        export PATH="$pnpmBin:$nodeBin:$PATH"
        export HOME=$(mktemp -d)
        cp -r "$src" source
        chmod -R u+w source
        cd source
        pushd "$HOME" >/dev/null
        pnpm config set manage-package-manager-versions false
        pnpm config set side-effects-cache false
        pnpm config set update-notifier false
        popd >/dev/null
        pnpm config set store-dir "$out"
        # The download nixpkgs does with --force --registry: from the seed here.
        mkdir -p "$out"
        cp -r "$seed/." "$out/"
        chmod -R u+w "$out"
        pnpm install --offline --ignore-scripts --frozen-lockfile
        if [ "$fetcherVersion" -gt 1 ]; then echo "$fetcherVersion" > "$out/.fetcher-version"; fi
        rm -rf "$out"/{v3,v10}/tmp
        find "$out" -name "*.json" -print0 | while IFS= read -r -d "" file; do
          jq --sort-keys "del(.. | .checkedAt?)" "$file" > "$file.sorted"
          mv "$file.sorted" "$file"
        done
        rm -rf "$out"/{v3,v10}/projects
        if [ "$fetcherVersion" -ge 2 ]; then
          find "$out" -type f -name "*-exec" -print0 | xargs --no-run-if-empty -0 chmod 555
          find "$out" -type f -not -name "*-exec" -print0 | xargs --no-run-if-empty -0 chmod 444
          find "$out" -type d -print0 | xargs --no-run-if-empty -0 chmod 555
        fi
      '';

  # A generic builder in the spirit of nixpkgs' stdenv: each nativeBuildInput's
  # bin on PATH and setup hook sourced; unpack, configure (pre/post hooks),
  # build and install phases, with runHook.
  mkDerivation =
    fn:
    let
      attrs = fn (attrs // { inherit finalPackage; });
      drv = derivation {
        name = "${attrs.pname}-${attrs.version}";
        inherit system;
        builder = "/bin/bash";
        inherit (attrs) src buildPhase installPhase;
        pnpmDeps = attrs.pnpmDeps or "";
        nativeBuildInputs = attrs.nativeBuildInputs or [ ];
        args = [
          "-c"
          ''
            export PATH=${hostPath}
            set -euo pipefail
            export HOME=$(mktemp -d)
            runHook() {
              local name=$1 hooks="''${1}Hooks[@]" hook
              if [ -n "''${!name:-}" ]; then eval "''${!name}"; fi
              for hook in ''${!hooks+"''${!hooks}"}; do "$hook"; done
            }
            postConfigureHooks=()
            for input in $nativeBuildInputs; do
              if [ -d "$input/bin" ]; then PATH="$input/bin:$PATH"; fi
              if [ -f "$input/nix-support/setup-hook" ]; then source "$input/nix-support/setup-hook"; fi
            done
            cp -r "$src" source
            chmod -R u+w source
            cd source
            runHook preConfigure
            runHook postConfigure
            eval "$buildPhase"
            eval "$installPhase"
          ''
        ];
      };
      finalPackage = drv // (attrs.passthru or { }) // { inherit (attrs) meta pnpmDeps; };
    in
    finalPackage;
in
{
  inherit
    nodejs_24
    pnpm_10
    makeWrapper
    fetchPnpmDeps
    pnpmConfigHook
    mkDerivation
    ;
}
