# home-manager modules (rootless). `default` imports nix-snapshotter and containerd.
rec {
  default = {
    imports = [
      nix-snapshotter-rootless
      containerd-rootless
    ];
  };
  nix-snapshotter-rootless = ./nix-snapshotter-rootless.nix;
  containerd-rootless = ./containerd-rootless.nix;
  preload-containerd-rootless = ./preload-containerd-rootless.nix;
}
