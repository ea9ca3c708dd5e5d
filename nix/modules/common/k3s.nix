# Options shared by services.k3s and services.k3s.rootless.
{ lib }:
{
  options = {
    snapshotter = lib.mkOption {
      type = lib.types.enum [
        "overlayfs"
        "fuse-overlayfs"
        "stargz"
        "nix"
      ];
      default = "overlayfs";
      description = ''
        Snapshotter of k3s' embedded containerd (`--snapshotter`). `nix`
        needs a k3s whose embedded containerd has a built-in `nix` snapshotter
        (the Go project ships a patched k3s for that); stock k3s does not. With
        this project's daemon use `virtualisation.containerd.k3sIntegration`
        instead: k3s then runs on the system containerd, which reaches
        nix-snapshotter as a proxy plugin.
      '';
    };
    setEmbeddedContainerd = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Export CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE (k8s.io) and
        CONTAINERD_SNAPSHOTTER for k3s' embedded containerd in shells that
        have not set them.
      '';
    };
    setKubeConfig = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Export KUBECONFIG for k3s' kubeconfig in shells that have not set it.";
    };
  };

  environment =
    {
      cfg,
      address,
      kubeconfig,
    }:
    lib.optionalString cfg.setEmbeddedContainerd ''
      if [ -z "''${CONTAINERD_ADDRESS-}" ]; then export CONTAINERD_ADDRESS="${address}"; fi
      if [ -z "''${CONTAINERD_NAMESPACE-}" ]; then export CONTAINERD_NAMESPACE="k8s.io"; fi
      if [ -z "''${CONTAINERD_SNAPSHOTTER-}" ]; then export CONTAINERD_SNAPSHOTTER="${cfg.snapshotter}"; fi
    ''
    + lib.optionalString cfg.setKubeConfig ''
      if [ -z "''${KUBECONFIG-}" ]; then export KUBECONFIG="${kubeconfig}"; fi
    '';
}
