#!/usr/bin/env bash
# Installs, as root, the Debian packages that the tests and the demo drive for real: containerd and
# runc, Nix, an OCI registry, skopeo, and the tools the fixtures use. Debian 12 (bookworm:
# containerd 1.6.20, Nix 2.8) and Debian 13 (trixie: containerd 1.7.24, Nix 2.26) use the same
# package names. Then makes sure Nix can build as root (see nix_build_users below).
# Packages and users already present are left alone; safe to run twice.
set -euo pipefail

packages=(
  containerd runc containernetworking-plugins
  nix-bin nix-setup-systemd
  docker-registry skopeo apache2-utils
  busybox-static patchelf fuse-overlayfs jq iproute2 util-linux redis-server time
  golang-github-containerd-containerd-dev golang-go
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

# Nix run as root hands every build to a member of the group that nix.conf's `build-users-group`
# names (default `nixbld`), and refuses to build when that group does not exist ("the group
# 'nixbld' specified in 'build-users-group' does not exist"). Debian 12's nix-bin creates the
# group and ten users; Debian 13's leaves them to nix-setup-systemd, which also wants systemd to
# run nix-daemon. We create what is missing: the group, and build users nixbld1..10 (no home, no
# login) in it, with the numbers Nix's own installer uses (gid 30000, uids 30001..) when they are
# free. Not the system range: before and after a build Nix kills every process of its build user
# (kill -1 as that uid), so a Debian 13 root sharing a Debian 12 host's PID namespace whose build
# users had the host's numbers (999 down) had its builders killed by the host's Nix builds
# ("failed due to signal 9"). An empty `build-users-group` (single-user Nix, builds run as root)
# needs nothing.
nix_build_users() {
  local group count=10 index user output
  command -v nix >/dev/null 2>&1 || return 0
  group="$(nix --extra-experimental-features nix-command show-config 2>/dev/null |
    sed -n 's/^build-users-group = //p')"
  [ -n "$group" ] || return 0
  if ! getent group "$group" >/dev/null; then
    echo "system-deps: creating Nix's build group $group" >&2
    if getent group 30000 >/dev/null; then
      groupadd --system "$group"
    else
      groupadd --system --gid 30000 "$group"
    fi
  fi
  for index in $(seq "$count"); do
    user="$group$index"
    if ! getent passwd "$user" >/dev/null; then
      local uid_option=(--system)
      getent passwd "$((30000 + index))" >/dev/null || uid_option=(--system --uid "$((30000 + index))")
      # Quiet unless it fails: useradd warns that 30001 is above the system range it was asked for.
      if ! output="$(useradd "${uid_option[@]}" --no-create-home --home-dir /var/empty \
        --shell /usr/sbin/nologin --gid "$group" --groups "$group" \
        --comment "Nix build user $index" "$user" 2>&1)"; then
        echo "$output" >&2
        return 1
      fi
    elif ! id -nG "$user" | tr ' ' '\n' | grep -qx "$group"; then
      usermod --append --groups "$group" "$user"
    fi
  done
}
nix_build_users
