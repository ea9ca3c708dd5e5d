# The commit a branch of nix-registry's git package set points at (the tag `latest` asks for
# HEAD). Both values come from the registry: the URL from its configuration, the ref from a tag
# that passed the tag grammar; they arrive as --argstr strings.
{ gitUrl, gitRef }:
(builtins.fetchGit {
  url = gitUrl;
  ref = gitRef;
}).rev
