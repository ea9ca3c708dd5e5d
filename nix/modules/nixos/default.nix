# NixOS modules. `default` imports all of them.
rec {
  default = {
    imports = [
      nix-snapshotter
      nix-snapshotter-rootless
      containerd
      containerd-rootless
      preload-containerd
      preload-containerd-rootless
      k3s
      nix-registry
    ];
  };
  nix-snapshotter = ./nix-snapshotter.nix;
  nix-snapshotter-rootless = ./nix-snapshotter-rootless.nix;
  containerd = ./containerd.nix;
  containerd-rootless = ./containerd-rootless.nix;
  preload-containerd = ./preload-containerd.nix;
  preload-containerd-rootless = ./preload-containerd-rootless.nix;
  k3s = ./k3s.nix;
  nix-registry = ./nix-registry.nix;
}
