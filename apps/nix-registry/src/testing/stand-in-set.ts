import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * TEST DOUBLE: a package set for the registry's end-to-end tests, made offline from the host's
 * static busybox with builtins.derivation and the host's /bin/sh (as the nix/ tests' stand-in
 * nixpkgs does; builds run unsandboxed, see HOST_BUILD_OPTIONS). A function of `{ system }`
 * like nixpkgs, with:
 * - `busybox`: `bin/busybox` and its applet links (`sh`, `ls`, `cat`...);
 * - `hello`: `bin/hello`, a script run by busybox's sh (so its closure has two paths);
 * - `bash` (a script running busybox's sh), `coreutils` (links to busybox applets): for the
 *   `shell` meta-package;
 * - `slow`: a build that takes a minute;
 * - `lib`: not a package (an attribute set);
 * - `closureInfo { rootPaths }`: like nixpkgs', a `store-paths` file listing the closure.
 * `marker` is written into each derivation so that each test run builds new store paths.
 */
export interface StandInSet {
  /** The directory holding `default.nix`. */
  path: string;
  remove(): Promise<void>;
}

export async function createStandInSet(
  marker: string,
  busybox = "/bin/busybox",
): Promise<StandInSet> {
  const dir = await mkdtemp(join(tmpdir(), "nix-registry-set-"));
  const expression = `# TEST DOUBLE: nix-registry's stand-in package set (see stand-in-set.ts).
{ system ? builtins.currentSystem }:
let
  mk = name: script: env: derivation ({
    inherit name system;
    marker = ${JSON.stringify(marker)};
    builder = "/bin/sh";
    args = [ "-c" ("PATH=/usr/bin:/bin; set -e; " + script) ];
  } // env);
  applets = "sh ls cat echo env id true uname";
  busybox = mk "busybox" ''
    mkdir -p $out/bin
    cp ${busybox} $out/bin/busybox
    for applet in ${"$"}{applets}; do ln -s busybox $out/bin/$applet; done
  '' { inherit applets; };
  links = name: tools: mk name ''
    mkdir -p $out/bin
    for tool in $tools; do ln -s $busybox/bin/busybox $out/bin/$tool; done
  '' { inherit busybox tools; };
in
{
  inherit busybox;
  hello = mk "hello" ''
    mkdir -p $out/bin
    printf '#!%s/bin/sh\\necho hello from the nix registry\\n' "$busybox" > $out/bin/hello
    chmod 0555 $out/bin/hello
  '' { inherit busybox; };
  # busybox has no applet named bash: a script running busybox's sh.
  bash = mk "bash" ''
    mkdir -p $out/bin
    printf '#!%s/bin/sh\\nexec %s/bin/busybox sh "$@"\\n' "$busybox" "$busybox" > $out/bin/bash
    chmod 0555 $out/bin/bash
  '' { inherit busybox; };
  coreutils = links "coreutils" "mkdir rm cp mv";
  # Builds for a minute: for tests that kill the registry mid-build.
  slow = mk "slow" "sleep 60; mkdir -p $out/bin" { };
  lib = { version = "stand-in"; };
  closureInfo = { rootPaths }: mk "closure-info" ''
    mkdir -p $out
    for graph in $graphs; do
      # exportReferencesGraph: path, deriver, reference count, references; repeated.
      awk 'BEGIN { state = 0 } { if (state == 0) { print; state = 1 } else if (state == 1) { state = 2 } else if (state == 2) { left = $1; state = (left > 0) ? 3 : 0 } else { left--; if (left == 0) state = 0 } }' $graph
    done | sort -u > $out/store-paths
  '' (
    let
      named = builtins.genList (i: "graph" + toString i) (builtins.length rootPaths);
    in
    {
      graphs = builtins.concatStringsSep " " named;
      exportReferencesGraph = builtins.concatLists (
        builtins.genList (i: [ (builtins.elemAt named i) (builtins.elemAt rootPaths i) ]) (builtins.length rootPaths)
      );
    }
  );
}
`;
  await writeFile(join(dir, "default.nix"), expression);
  return { path: dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
