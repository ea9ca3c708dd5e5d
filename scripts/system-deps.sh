#!/usr/bin/env bash
# Installs, as root, the Debian 12 packages that the tests and the demo drive for real:
# containerd 1.6 and runc, Nix, an OCI registry, skopeo, and the tools the fixtures use.
# Packages already present are left alone; safe to run twice.
set -euo pipefail

packages=(
  containerd runc containernetworking-plugins
  nix-bin
  docker-registry skopeo apache2-utils
  busybox-static patchelf fuse-overlayfs jq iproute2 util-linux redis-server
  golang-github-containerd-containerd-dev
  ca-certificates git openssl
  shellcheck
  systemd python3-minimal
  uidmap rootlesskit slirp4netns acl
  debootstrap
)

if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root; skipping apt-get (the end-to-end tests will be skipped)" >&2
  exit 0
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "system-deps: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
