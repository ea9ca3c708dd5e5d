# The package set's revision for nix-registry's cache key: the store path its source directory
# would have (read-only evaluation computes it without copying anything into the store).
{ sourceDir }:
builtins.path {
  path = /. + sourceDir;
  name = "package-set-source";
}
