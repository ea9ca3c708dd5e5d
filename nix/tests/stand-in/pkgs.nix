# TEST DOUBLE: a stand-in for the few nixpkgs functions and packages that
# nix/build-image.nix and nix/modules use, built with builtins.derivation and
# the host's /bin/sh (PATH=/usr/bin:/bin). Host programs are wrapped, not
# rebuilt. Never used outside nix/tests.
{
  # Absolute path of the host's node (Node >= 22.13).
  node,
  # Absolute path of a directory laid out like the repository whose
  # apps/*/dist/main.js are run, by Nix build users too: the tests pass the
  # copy scripts/stage-for-other-users.ts makes, since the checkout itself
  # may be closed to them.
  repo,
  system ? builtins.currentSystem,
}:
let
  lib = import ./lib.nix;

  inherit (builtins) concatLists genList length elemAt;

  shell = "/bin/sh";

  mkDerivation =
    {
      name,
      script,
      env ? { },
      passthru ? { },
    }:
    let
      drv = derivation (
        env
        // {
          inherit name system;
          builder = shell;
          buildCommand = script;
          args = [
            "-c"
            ''PATH=/usr/bin:/bin; set -e; eval "$buildCommand"''
          ];
        }
      );
    in
    drv // passthru;

  runCommand =
    name: env: script:
    mkDerivation {
      inherit name script;
      env = removeAttrs env [ "passthru" "nativeBuildInputs" "buildInputs" ];
      passthru = env.passthru or { };
    };

  writeText =
    name: text:
    mkDerivation {
      inherit name;
      env = { inherit text; };
      script = ''printf '%s' "$text" > "$out"'';
    };

  writeShellScriptBin =
    name: text:
    mkDerivation {
      inherit name;
      env = {
        inherit text;
        fileName = name;
      };
      script = ''
        mkdir -p "$out/bin"
        { printf '#!/bin/bash\n'; printf '%s\n' "$text"; } > "$out/bin/$fileName"
        chmod 0555 "$out/bin/$fileName"
        # nixpkgs checks the syntax the same way (stdenv.shellDryRun).
        /bin/bash -n "$out/bin/$fileName"
      '';
    };

  # Like nixpkgs' writeShellApplication: bash with errexit, nounset and
  # pipefail, runtimeInputs first on PATH, and the script checked with
  # shellcheck at build time (when the host has it).
  writeShellApplication =
    {
      name,
      text,
      runtimeInputs ? [ ],
    }:
    mkDerivation {
      inherit name;
      env = {
        fileName = name;
        text = ''
          #!/bin/bash
          set -o errexit
          set -o nounset
          set -o pipefail
          export PATH="${lib.makeBinPath runtimeInputs}:$PATH"

          ${text}
        '';
      };
      script = ''
        mkdir -p "$out/bin"
        printf '%s' "$text" > "$out/bin/$fileName"
        chmod 0555 "$out/bin/$fileName"
        if [ -x /usr/bin/shellcheck ]; then /usr/bin/shellcheck "$out/bin/$fileName"; fi
        /bin/bash -n "$out/bin/$fileName"
      '';
    };

  # Like nixpkgs' closureInfo: $out/store-paths lists the closure of rootPaths, sorted.
  closureInfo =
    { rootPaths }:
    mkDerivation {
      name = "closure-info";
      env.exportReferencesGraph = concatLists (
        genList (i: [
          "closure-${toString i}"
          "${elemAt rootPaths i}"
        ]) (length rootPaths)
      );
      script = ''
        mkdir "$out"
        touch "$out/store-paths"
        for graph in closure-*; do
          [ -e "$graph" ] || continue
          awk 'state == 0 { print; state = 1; next }
               state == 1 { state = 2; next }
               state == 2 { left = $1; state = (left > 0) ? 3 : 0; next }
               state == 3 { left--; if (left == 0) state = 0; next }' "$graph"
        done | sort -u > "$out/store-paths"
      '';
    };

  # A package made of links to host programs, e.g. hostPackage "nix" [ "/usr/bin/nix-store" ].
  hostPackage =
    name: programs:
    runCommand name { inherit programs; } ''
      mkdir -p "$out/bin"
      for program in $programs; do ln -s "$program" "$out/bin/"; done
    '';

  emptyPackage = name: runCommand name { } ''mkdir -p "$out/bin"'';

  # nixpkgs' buildEnv, for packages with a bin/: one directory of links to
  # every program of `paths`.
  buildEnv =
    {
      name,
      paths,
      ...
    }:
    runCommand name { inherit paths; } ''
      mkdir -p "$out/bin"
      for path in $paths; do
        for program in "$path"/bin/*; do
          if [ -e "$program" ]; then ln -s "$program" "$out/bin/"; fi
        done
      done
    '';

  # TOML writer (nixpkgs uses remarshal; this is a small pure-Nix equivalent).
  toTOML =
    let
      inherit (builtins)
        attrNames
        filter
        isAttrs
        isBool
        isFloat
        isInt
        isList
        isString
        match
        toJSON
        all
        concatStringsSep
        ;
      key = k: if match "[A-Za-z0-9_-]+" k != null then k else toJSON k;
      value =
        v:
        if isString v then
          toJSON v
        else if isBool v then
          (if v then "true" else "false")
        else if isInt v || isFloat v then
          toJSON v
        else if isList v then
          "[${concatStringsSep ", " (map value v)}]"
        else if isAttrs v then
          "{${concatStringsSep ", " (map (n: "${key n} = ${value v.${n}}") (attrNames v))}}"
        else
          throw "toTOML: cannot render ${builtins.typeOf v}";
      isTable = v: isAttrs v && !(v ? outPath);
      isTableArray = v: isList v && v != [ ] && all isTable v;
      body =
        path: attrs:
        let
          names = attrNames attrs;
          scalars = filter (n: !(isTable attrs.${n}) && !(isTableArray attrs.${n})) names;
          tables = filter (n: isTable attrs.${n}) names;
          arrays = filter (n: isTableArray attrs.${n}) names;
          header = concatStringsSep "." (map key path);
        in
        lib.optionalString (path != [ ] && (scalars != [ ] || (tables == [ ] && arrays == [ ]))) "\n[${header}]\n"
        + concatStringsSep "" (map (n: "${key n} = ${value attrs.${n}}\n") scalars)
        + concatStringsSep "" (map (n: body (path ++ [ n ]) attrs.${n}) tables)
        + concatStringsSep "" (
          map (
            n:
            concatStringsSep "" (
              map (
                element:
                "\n[[${concatStringsSep "." (map key (path ++ [ n ]))}]]\n"
                + body' (path ++ [ n ]) element
              ) attrs.${n}
            )
          ) arrays
        );
      # The body of an array-of-tables element: its own header is already written.
      body' =
        path: attrs:
        let
          names = attrNames attrs;
          scalars = filter (n: !(isTable attrs.${n}) && !(isTableArray attrs.${n})) names;
          rest = removeAttrs attrs scalars;
        in
        concatStringsSep "" (map (n: "${key n} = ${value attrs.${n}}\n") scalars)
        + (if rest == { } then "" else body path rest);
    in
    attrs: body [ ] attrs;

  formats.toml =
    { }:
    {
      type =
        let
          valueType =
            lib.types.nullOr (
              lib.types.oneOf [
              lib.types.bool
              lib.types.int
              lib.types.float
              lib.types.str
              lib.types.path
              (lib.types.attrsOf valueType)
              (lib.types.listOf valueType)
            ]
            )
            // {
              description = "TOML value";
            };
        in
        lib.types.attrsOf valueType;
      generate = name: value: writeText name (toTOML value);
    };

  nix = hostPackage "nix" [
    "/usr/bin/nix"
    "/usr/bin/nix-store"
    "/usr/bin/nix-build"
    "/usr/bin/nix-instantiate"
  ];

  # The workspace's built apps, run with the host's node.
  nix-snapshotter =
    runCommand "nix-snapshotter-host"
      {
        inherit node repo;
        passthru = {
          buildImage = buildImageFunctions.buildImage;
        };
      }
      ''
        mkdir -p "$out/bin"
        for app in nix-snapshotter nix2container; do
          printf '#!/bin/sh\nexec %s %s/apps/%s/dist/main.js "$@"\n' "$node" "$repo" "$app" > "$out/bin/$app"
          chmod 0555 "$out/bin/$app"
        done
      '';

  # The workspace's built registry, run with the host's node (module rendering only).
  nix-registry =
    runCommand "nix-registry-host" { inherit node repo; } ''
      mkdir -p "$out/bin"
      printf '#!/bin/sh\nexec %s %s/apps/nix-registry/dist/main.js "$@"\n' "$node" "$repo" > "$out/bin/nix-registry"
      chmod 0555 "$out/bin/nix-registry"
    ''
    // {
      meta.mainProgram = "nix-registry";
    };

  buildImageFunctions = import ../../build-image.nix {
    inherit
      lib
      stdenv
      runCommand
      closureInfo
      writeText
      writeShellScriptBin
      nix-snapshotter
      ;
  };

  stdenv.hostPlatform = { inherit system; };
in
{
  inherit
    lib
    stdenv
    runCommand
    writeText
    writeShellScriptBin
    writeShellApplication
    closureInfo
    formats
    toTOML
    nix
    nix-snapshotter
    nix-registry
    hostPackage
    buildEnv
    ;
  inherit (buildImageFunctions) buildImage copyToRegistry copyToContainerd;
  containerd = hostPackage "containerd" [
    "/usr/bin/containerd"
    "/usr/bin/ctr"
  ];
  runc = hostPackage "runc" [ "/usr/sbin/runc" ];
  systemd = hostPackage "systemd" [ "/usr/bin/systemd-notify" ];
  fuse-overlayfs = hostPackage "fuse-overlayfs" [ "/usr/bin/fuse-overlayfs" ];
  fuse3 = hostPackage "fuse3" [ "/sbin/mount.fuse3" ];
  util-linux = hostPackage "util-linux" [
    "/usr/bin/nsenter"
    "/usr/bin/setpriv"
  ];
  git = hostPackage "git" [ "/usr/bin/git" ];
  cni-plugins = hostPackage "cni-plugins" [
    "/usr/lib/cni/bridge"
    "/usr/lib/cni/loopback"
  ];
  # Debian packages no flannel plugin: a stand-in program under the same name.
  cni-plugin-flannel = runCommand "cni-plugin-flannel" { } ''
    mkdir -p "$out/bin"
    printf '#!/bin/sh\necho stand-in flannel >&2\nexit 1\n' > "$out/bin/flannel"
    chmod 0555 "$out/bin/flannel"
  '';
  gvisor = emptyPackage "gvisor";
  rootlesskit = emptyPackage "rootlesskit";
  slirp4netns = emptyPackage "slirp4netns";
  iproute2 = emptyPackage "iproute2";
  iptables = emptyPackage "iptables";
  coreutils = hostPackage "coreutils" [ "/usr/bin/install" ];
  # For nix/examples.nix.
  hello = writeShellScriptBin "hello" "echo 'Hello, world!'";
  redis = hostPackage "redis" [ "/usr/bin/redis-server" ];
  bashInteractive = hostPackage "bash-interactive" [ "/bin/bash" ];
  procps = emptyPackage "procps";
  bash = emptyPackage "bash";
  k3s = emptyPackage "k3s";
}
