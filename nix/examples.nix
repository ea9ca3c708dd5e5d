# Example images and Kubernetes resources, the ones the Go nix-snapshotter's
# flake and README offer: `hello`, `redis`, `redisWithShell` (a redis image with
# a shell, built on the redis one), and a redis Pod and Service whose image is
# pulled through Nix (`nix:0/...`, resolved by nix-snapshotter's image service).
{ pkgs }:
let
  inherit (pkgs.nix-snapshotter) buildImage;

  images = rec {
    hello = buildImage {
      name = "hello";
      tag = "latest";
      config.entrypoint = [ "${pkgs.hello}/bin/hello" ];
    };

    redis = buildImage {
      name = "redis";
      tag = "latest";
      config.entrypoint = [ "${pkgs.redis}/bin/redis-server" ];
    };

    redisWithShell = buildImage {
      name = "redis-shell";
      tag = "latest";
      fromImage = redis;
      config.entrypoint = [ "/bin/sh" ];
      copyToRoot = pkgs.buildEnv {
        name = "system-path";
        pathsToLink = [ "/bin" ];
        paths = [
          pkgs.bashInteractive
          pkgs.coreutils
          pkgs.redis
        ];
      };
    };
  };

  # The image the Pod runs: a nix:0 reference, no registry involved.
  redisByNix = buildImage {
    name = "redis";
    resolvedByNix = true;
    config.entrypoint = [ "${pkgs.redis}/bin/redis-server" ];
  };

  k8sResources = {
    redisPod = {
      apiVersion = "v1";
      kind = "Pod";
      metadata = {
        name = "redis";
        labels.name = "redis";
      };
      spec.containers = [
        {
          name = "redis";
          inherit (redisByNix) image;
          args = [
            "--protected-mode"
            "no"
          ];
          ports = [
            {
              name = "client";
              containerPort = 6379;
            }
          ];
        }
      ];
    };

    redisService = {
      apiVersion = "v1";
      kind = "Service";
      metadata.name = "redis-service";
      spec = {
        type = "NodePort";
        selector.name = "redis";
        ports = [
          {
            name = "client";
            port = 6379;
            targetPort = 6379;
            nodePort = 30000;
          }
        ];
      };
    };
  };
in
{
  inherit images k8sResources;

  # `kubectl apply -f <this>/` applies both resources.
  k8sResourcesDir = pkgs.runCommand "redis-k8s-resources" {
    pod = builtins.toJSON k8sResources.redisPod;
    service = builtins.toJSON k8sResources.redisService;
  } ''
    mkdir -p "$out"
    printf '%s\n' "$pod" > "$out/redis-pod.json"
    printf '%s\n' "$service" > "$out/redis-service.json"
  '';
}
