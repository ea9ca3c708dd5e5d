# Maps a nixpkgs platform (stdenv.hostPlatform) to the OCI/Go names used in
# image configs and in containerd's `unpack_config` (`linux/amd64`).
let
  cpuToArchitecture = {
    x86_64 = "amd64";
    i686 = "386";
    aarch64 = "arm64";
    armv7l = "arm";
    armv6l = "arm";
    riscv64 = "riscv64";
    powerpc64le = "ppc64le";
    s390x = "s390x";
    loongarch64 = "loong64";
    mips64el = "mips64le";
  };

  cpuOf = platform: builtins.head (builtins.split "-" platform.system);
in
{
  ociArchitecture =
    platform:
    platform.go.GOARCH or cpuToArchitecture.${cpuOf platform}
      or (throw "nix-snapshotter: no OCI architecture known for system ${platform.system}");

  ociOs = platform: platform.go.GOOS or "linux";

  ociPlatform =
    platform:
    "${platform.go.GOOS or "linux"}/${
      platform.go.GOARCH or cpuToArchitecture.${cpuOf platform}
        or (throw "nix-snapshotter: no OCI architecture known for system ${platform.system}")
    }";
}
