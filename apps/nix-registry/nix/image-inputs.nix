# The only Nix expression nix-registry evaluates. Everything a client sends arrives as string
# arguments (--argstr): the package names as one JSON list, parsed with builtins.fromJSON and
# used only as attribute names. Nothing from a request is ever parsed as Nix code.
{
  # Absolute path of the package set (a file or a directory with default.nix), from the
  # registry's configuration. A function of { system } (like nixpkgs) or an attribute set.
  pkgsPath,
  # Or a git repository (from the configuration; "" = use pkgsPath) and the commit nix-registry
  # resolved the tag to (a branch, a git tag or the commit itself: any ref may hold it).
  gitUrl ? "",
  gitRev ? "",
  # JSON list of attribute names, e.g. ["hello","busybox"]; "shell" is a meta-package.
  namesJson,
  # Nix system double, e.g. "x86_64-linux".
  system,
}:
let
  names = builtins.fromJSON namesJson;
  source =
    if gitUrl == "" then
      import (/. + pkgsPath)
    else
      import (builtins.fetchGit {
        url = gitUrl;
        rev = gitRev;
        allRefs = true;
      });
  set = if builtins.isFunction source then source { inherit system; } else source;
  has = name: builtins.hasAttr name set;
  # Nixery's `shell`: bash with coreutils and friends, those the set has.
  shellNames =
    builtins.filter has (
      (if has "bashInteractive" then [ "bashInteractive" ] else [ "bash" ])
      ++ [
        "coreutils"
        "moreutils"
        "nano"
      ]
    );
  expanded = builtins.concatLists (
    map (name: if name == "shell" then shellNames else [ name ]) names
  );
  unique = builtins.foldl' (seen: name: if builtins.elem name seen then seen else seen ++ [ name ]) [ ] expanded;
  isPackage =
    name:
    let
      value = builtins.tryEval (
        let
          v = builtins.getAttr name set;
        in
        builtins.isAttrs v && (v.type or null) == "derivation"
      );
    in
    value.success && value.value;
  missing = builtins.filter (name: !(has name)) unique;
  notPackages = builtins.filter (name: has name && !(isPackage name)) unique;
  ok = missing == [ ] && notPackages == [ ] && unique != [ ];
  packages = map (name: builtins.getAttr name set) unique;
  closureInfo = if ok && has "closureInfo" then set.closureInfo { rootPaths = packages; } else null;
in
{
  # Evaluated first (nix-instantiate --eval --strict --json): which names are unknown, and the
  # output paths the build will produce.
  check = {
    inherit missing notPackages;
    names = unique;
    outPaths = if ok then map (package: package.outPath) packages else [ ];
    closureInfo = if closureInfo == null then null else closureInfo.outPath;
  };
  # Built second (nix-build -A build --out-link <gc root>): the packages and their closure info.
  build = (if closureInfo == null then [ ] else [ closureInfo ]) ++ packages;
}
