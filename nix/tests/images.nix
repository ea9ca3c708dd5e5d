# Test images built with buildImage against the stand-in nixpkgs.
# `salt` makes the fixture store paths unique to one test run.
{
  node,
  repo,
  salt ? "",
  # Where the copy-to-* scripts send the image.
  registry ? "localhost:5000",
  containerdAddress ? "$XDG_RUNTIME_DIR/containerd/containerd.sock",
  containerdNamespace ? null,
}:
let
  pkgs = import ./stand-in/pkgs.nix { inherit node repo; };

  # A fixture closure: busybox copied into the store, and a script that refers
  # to it (two store paths, one reference).
  busybox = pkgs.runCommand "busybox-fixture" { inherit salt; } ''
    mkdir -p "$out/bin"
    cp /bin/busybox "$out/bin/busybox"
    for applet in sh echo cat ls; do ln -s busybox "$out/bin/$applet"; done
  '';

  hello = pkgs.writeShellScriptBin "hello" ''
    echo "hello from ${busybox}"
  '';
in
rec {
  inherit busybox hello;

  hello-image = pkgs.buildImage {
    name = "Example.org/Hello";
    config = {
      entrypoint = [
        "${busybox}/bin/sh"
        "${hello}/bin/hello"
      ];
      env = [ "SALT=${salt}" ];
    };
  };

  nix-image = pkgs.buildImage {
    name = "example.org/Hello-Nix";
    resolvedByNix = true;
    architecture = "arm64";
    config.Entrypoint = [ "${busybox}/bin/sh" ];
  };

  copy-to-registry = hello-image.copyToRegistry {
    imageName = "${registry}/hello";
    imageTag = "v2";
    plainHTTP = true;
  };

  copy-to-containerd =
    if containerdNamespace == null then
      hello-image.copyToContainerd { address = containerdAddress; }
    else
      hello-image.copyToContainerd {
        address = containerdAddress;
        namespace = containerdNamespace;
      };

  # What the tests compare with the Go project's passthru.
  passthru =
    builtins.mapAttrs
      (_: image: {
        inherit (image) name tag image architecture;
        path = image.outPath;
      })
      {
        hello = hello-image;
        nix = nix-image;
        layered = layered-image;
      };

  layered-image = pkgs.buildImage {
    name = "hello-shell";
    tag = "v1";
    fromImage = hello-image;
    copyToRoot = busybox;
    config.cmd = [ "/bin/sh" ];
  };
}
