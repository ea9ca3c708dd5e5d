# Checks that a commit of nix-registry's git package set exists (in any of its refs) and gives it
# back. Both values come from the registry: the URL from its configuration, the commit from a tag
# that passed the tag grammar (40 hex digits) or from `git ls-remote`; they arrive as --argstr
# strings.
{ gitUrl, gitRev }:
(builtins.fetchGit {
  url = gitUrl;
  rev = gitRev;
  allRefs = true;
}).rev
