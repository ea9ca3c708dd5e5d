# nix/examples.nix (the flake's example images and Kubernetes resources)
# evaluated against the stand-in nixpkgs.
{ node, repo }:
import ../examples.nix { pkgs = import ./stand-in/pkgs.nix { inherit node repo; }; }
