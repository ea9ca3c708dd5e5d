# buildImage and its helpers, with the same arguments and passthru as the Go
# nix-snapshotter's `pkgs.nix-snapshotter.buildImage`, plus `architecture`.
#
# Takes only a handful of nixpkgs functions so that it can be evaluated (and
# tested) against a small stand-in for nixpkgs; see nix/tests/.
{
  lib,
  stdenv,
  runCommand,
  closureInfo,
  writeText,
  writeShellScriptBin,
  # A package providing bin/nix2container.
  nix-snapshotter,
}:

let
  platformLib = import ./platform.nix;

  nix2container = "${nix-snapshotter}/bin/nix2container";

  # Copies an image archive to an OCI registry with `nix2container push`.
  copyToRegistry =
    image:
    {
      imageName ? image.name,
      imageTag ? image.tag,
      plainHTTP ? false,
    }:
    writeShellScriptBin "copy-to-registry" ''
      exec ${nix2container} push \
        --ref ${lib.escapeShellArg "${imageName}:${imageTag}"} \
        ${lib.optionalString plainHTTP "--plain-http"} \
        ${image}
    '';

  # Imports an image archive into containerd with `nix2container load`.
  # Without arguments the CLI's defaults apply (CONTAINERD_ADDRESS and
  # CONTAINERD_NAMESPACE from the environment, then
  # /run/containerd/containerd.sock and "default").
  copyToContainerd =
    image:
    {
      address ? null,
      namespace ? null,
    }:
    writeShellScriptBin "copy-to-containerd" ''
      exec ${nix2container} \
        ${lib.optionalString (address != null) "--address \"${address}\""} \
        ${lib.optionalString (namespace != null) "--namespace \"${namespace}\""} \
        load ${image}
    '';

  # Builds a nix image: an OCI archive whose only layer holds the mountpoints of
  # the closure, annotated with the closure's store paths, so that
  # nix-snapshotter takes the packages from the host's Nix store.
  buildImage =
    {
      # Image name; with resolvedByNix only used to name the store path.
      name,
      # Image tag.
      tag ? "latest",
      # When true the image's reference is `nix:0<store path of the archive>`,
      # which nix-snapshotter's CRI image service resolves through Nix, so no
      # registry is needed.
      resolvedByNix ? false,
      # A base image archive (OCI or docker-archive, e.g. another buildImage or
      # a dockerTools image). Its layers are kept as they are.
      fromImage ? null,
      # A derivation or a list of derivations whose contents are linked at the
      # root of the image (the /nix/store/<hash>-<name> prefix is removed).
      copyToRoot ? null,
      # The OCI image configuration (Entrypoint, Cmd, Env, ExposedPorts, ...);
      # keys are matched case-insensitively, e.g. `entrypoint` or `Entrypoint`.
      config ? { },
      # The OCI architecture (amd64, arm64, ...); defaults to the host platform.
      architecture ? platformLib.ociArchitecture stdenv.hostPlatform,
      # The layer's nix annotations: "auto" (the closure form alone, one
      # `nix-closure` label), "both" (also one `nix-store-path.<i>` per path,
      # for the Go nix-snapshotter's releases, which read only those),
      # "per-path".
      annotations ? "auto",
    }:
    let
      # With resolvedByNix the store path is the image reference, whose path
      # components the distribution grammar limits to lower-case letters,
      # digits and single separators: the name is lower-cased, anything else
      # is refused here rather than by the kubelet later.
      baseName = if resolvedByNix then lib.toLower (baseNameOf name) else baseNameOf name;
      validReferenceName = builtins.match "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*" baseName != null;

      configFile = writeText "config-${baseName}.json" (builtins.toJSON config);

      copyToRootList = lib.toList (if copyToRoot == null then [ ] else copyToRoot);

      # The config file is a root too: store paths named in the config (an
      # entrypoint) become part of the image's closure.
      runtimeClosureInfo = closureInfo { rootPaths = [ configFile ] ++ copyToRootList; };

      copyToRootFile = writeText "copy-to-root-${baseName}.json" (builtins.toJSON copyToRootList);

      imageName = lib.toLower name;

      imageRef = if resolvedByNix then "nix:0${image.outPath}" else "${imageName}:${tag}";

      image =
        runCommand "nix-image-${baseName}.tar"
          {
            passthru = {
              inherit name tag architecture;
              # The reference to use in a pod spec or with `nerdctl run`.
              image = imageRef;
              copyToRegistry = copyToRegistry image;
              copyToContainerd = copyToContainerd image;
            };
          }
          ''
            ${nix2container} build \
              --config ${configFile} \
              --closure ${runtimeClosureInfo}/store-paths \
              --copy-to-root ${copyToRootFile} \
              --arch ${lib.escapeShellArg architecture} \
              --annotations ${lib.escapeShellArg annotations} \
              ${lib.optionalString (!resolvedByNix) "--ref ${lib.escapeShellArg imageRef}"} \
              ${lib.optionalString (fromImage != null) "--from-image ${fromImage}"} \
              "$out"
          '';
    in
    assert lib.assertMsg (builtins.isString name && name != "") "buildImage: name must be a non-empty string";
    assert lib.assertMsg (builtins.isAttrs config) "buildImage: config must be an attribute set";
    assert lib.assertMsg (builtins.elem annotations [
      "auto"
      "both"
      "per-path"
    ]) "buildImage: annotations must be \"auto\", \"both\" or \"per-path\"";
    assert lib.assertMsg (!resolvedByNix || validReferenceName)
      "buildImage: with resolvedByNix, the last part of name (\"${baseNameOf name}\") must be letters and digits joined by '.', '_', '__' or '-', since nix:0/nix/store/...-nix-image-<name>.tar must be a valid image reference";
    image;
in
{
  inherit buildImage copyToRegistry copyToContainerd;
}
