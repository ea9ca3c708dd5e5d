#!/usr/bin/env bash
# Usage:
#   scripts/suite-root.sh path <suite>                 make the root if needed, print its directory
#   scripts/suite-root.sh run <suite> [--bind DIR]... [--] <cmd> ...
#                                                      run a command inside it, in this checkout
#                                                      (each --bind DIR at the same path too)
#
# A minimal root of a newer Debian suite (trixie, sid), for the tests of what that suite packages
# and this machine cannot run (trixie's and sid's `nix-bin` need glibc >= 2.38). It is made by
# `debootstrap --variant=minbase` from the mirror of the machine's own apt sources (no host name
# is written anywhere in the repository), then gets, with apt inside the root:
#   nix-bin, containerd, runc, busybox-static, patchelf, redis-server, util-linux
# and the `nixbld` group with build users (trixie's `nix-bin` leaves them to
# `nix-setup-systemd`, while its nix.conf names the group).
#
# The root is cached in
#   ${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}/roots/<suite>-<hash>/
# where <hash> is taken from this script's text: editing the script (e.g. the package list) makes
# a new root, and the roots of older versions of the script are removed. A second call costs
# nothing. A root is made in a hidden directory and renamed into place when complete; a lock
# keeps two callers from making the same root at once.
#
# `run` enters the root in a private mount namespace (unshare), so that every mount disappears
# with the command: the root bind-mounted onto itself (runc needs `/` to be a mount point),
# /proc, /dev and /sys of the machine, a fresh tmpfs on /tmp and /run, and this checkout at the
# same path as outside. Node is this checkout's `.toolchain` Node 24 (scripts/bootstrap.sh), the
# same binary as on the machine; it runs on any glibc >= 2.28. The command starts in the
# checkout's directory with a clean environment (PATH, HOME=/root, and CI, TERM and every
# NIX_SNAPSHOTTER_* variable passed through).
set -euo pipefail

usage() {
  echo "usage: $0 path <trixie|sid>" >&2
  echo "       $0 run <trixie|sid> [--bind DIR]... [--] <command> [args...]" >&2
  exit 2
}

[ "$#" -ge 2 ] || usage
action="$1"
suite="$2"
shift 2
case "$action" in path | run) ;; *) usage ;; esac
case "$suite" in trixie | sid | forky | testing | unstable) ;; *) usage ;; esac
binds=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --bind)
      if [ "$#" -lt 2 ] || [ ! -d "$2" ]; then usage; fi
      binds+=("$(cd "$2" && pwd -P)")
      shift 2
      ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ "$action" = "path" ] || [ "$#" -gt 0 ] || usage

if [ "$(id -u)" -ne 0 ]; then
  echo "suite-root: must run as root (debootstrap, chroot, mounts)" >&2
  exit 1
fi

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
checkout="$(cd "$(dirname "$script_path")/.." && pwd -P)"
cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}/roots"
key="$(sha256sum "$script_path" | cut -c1-12)"
root="$cache_root/$suite-$key"

# What the tests drive inside the root (see docs/development.md, "The Nix matrix").
packages=(nix-bin containerd runc busybox-static patchelf redis-server util-linux mount procps)
build_users=8

# The first Debian mirror URI of this machine's apt sources (deb822 `URIs:` and one-line `deb`
# entries), skipping the security archive, which does not carry the suites' main archive.
find_mirror() {
  local file uri
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    for uri in $(sed -n 's/^URIs:[[:space:]]*//p' "$file"); do
      case "$uri" in
        *security*) ;;
        */debian | */debian/) echo "${uri%/}"; return 0 ;;
      esac
    done
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    for uri in $(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$file"); do
      case "$uri" in
        *security*) ;;
        */debian | */debian/) echo "${uri%/}"; return 0 ;;
      esac
    done
  done
  return 1
}

# First uid/gid of the root's build users: one range per suite, away from the machine's ids.
build_id_base() {
  case "$suite" in
    trixie) echo 30100 ;;
    sid | unstable) echo 30200 ;;
    forky | testing) echo 30300 ;;
  esac
}

# Runs a command chrooted in $1 with /proc, /dev and /sys mounted, in a private mount namespace.
in_root() {
  local dir="$1"
  shift
  unshare --mount --propagation private -- bash -euc '
    dir="$1"; shift
    mount -t proc proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    mount --rbind /sys "$dir/sys"
    exec chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
  ' bash "$dir" "$@"
}

make_root() {
  local mirror staging started
  mirror="$(find_mirror)" || {
    echo "suite-root: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
    exit 1
  }
  started=$SECONDS
  mkdir -p "$cache_root"
  # Roots made by other versions of this script are stale.
  for old in "$cache_root/$suite"-* "$cache_root/.$suite"-*; do
    [ -e "$old" ] || continue
    [ "$old" = "$root" ] && continue
    echo "suite-root: removing stale root $old" >&2
    rm -rf --one-file-system "$old"
  done
  staging="$(mktemp -d "$cache_root/.$suite-$key.XXXXXX")"
  # The root's `/`: other users (Nix's build users, apt's _apt) must traverse it.
  chmod 755 "$staging"
  echo "suite-root: debootstrap --variant=minbase $suite (from the machine's apt mirror)" >&2
  debootstrap --variant=minbase "$suite" "$staging" "$mirror" >"$staging.log" 2>&1 || {
    tail -n 30 "$staging.log" >&2
    echo "suite-root: debootstrap failed (log: $staging.log)" >&2
    exit 1
  }
  # No service starts inside the root while packages are installed.
  printf '#!/bin/sh\nexit 101\n' >"$staging/usr/sbin/policy-rc.d"
  chmod 755 "$staging/usr/sbin/policy-rc.d"
  echo "suite-root: apt-get install ${packages[*]}" >&2
  in_root "$staging" bash -euc '
    # A suite in development (sid) has a Release file valid for a week; the signature is still
    # checked, only the expiry date is not (the mirror may lag behind this clock).
    apt-get -o Acquire::Check-Valid-Until=false update -qq
    apt-get install -y -qq --no-install-recommends "$@"
    apt-get clean
  ' bash "${packages[@]}" >>"$staging.log" 2>&1 || {
    tail -n 30 "$staging.log" >&2
    echo "suite-root: apt-get install failed (log: $staging.log)" >&2
    exit 1
  }
  # The build users Nix's nix.conf names (build-users-group = nixbld), as nix-setup-systemd
  # or the NixOS module create them. Their ids must differ from the machine's own build users
  # and from the other roots': Nix kills every process of a build user's uid before and after
  # each build, and the kernel does not tell a root's uid 999 from the machine's.
  local id
  for id in $(seq "$(build_id_base)" "$(($(build_id_base) + build_users))"); do
    if getent passwd "$id" >/dev/null || getent group "$id" >/dev/null; then
      echo "suite-root: id $id of the root's build users is taken on this machine" >&2
      exit 1
    fi
  done
  in_root "$staging" bash -euc '
    base="$1" count="$2"
    if getent group nixbld >/dev/null; then groupmod --gid "$base" nixbld
    else groupadd --system --gid "$base" nixbld; fi
    for n in $(seq 1 "$count"); do
      if getent passwd "nixbld$n" >/dev/null; then
        usermod --uid "$((base + n))" --gid nixbld "nixbld$n"
      else
        useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
          --uid "$((base + n))" --gid nixbld --groups nixbld --comment "Nix build user $n" "nixbld$n"
      fi
    done
    if [ -d /nix/store ]; then chgrp nixbld /nix/store; fi
  ' bash "$(build_id_base)" "$build_users" >>"$staging.log" 2>&1
  rm -f "$staging.log"
  echo "$(in_root "$staging" nix-store --version) ($suite, made in $((SECONDS - started)) s)" \
    >"$staging/.suite-root"
  mv "$staging" "$root"
  echo "suite-root: $(cat "$root/.suite-root")" >&2
}

if [ ! -f "$root/.suite-root" ]; then
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.$suite.lock"
  flock 9
  [ -f "$root/.suite-root" ] || make_root
  flock -u 9
  exec 9>&-
fi

if [ "$action" = "path" ]; then
  echo "$root"
  exit 0
fi

# Environment of the command: a clean one, plus what CI and the tests read.
passed=(PATH="$checkout/.toolchain/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  HOME=/root LC_ALL=C.UTF-8 NIX_SNAPSHOTTER_SUITE="$suite")
for name in CI TERM NO_COLOR FORCE_COLOR $(compgen -e | grep '^NIX_SNAPSHOTTER_' || true); do
  [ "$name" = NIX_SNAPSHOTTER_SUITE ] && continue
  [ -n "${!name+x}" ] && passed+=("$name=${!name}")
done

unshare --mount --propagation private -- bash -euc '
  root="$1" count="$2"; shift 2
  dirs=("${@:1:count}"); shift "$count"
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  for dir in "${dirs[@]}"; do
    mkdir -p "$root$dir"
    mount --bind "$dir" "$root$dir"
  done
  exec chroot "$root" /usr/bin/env -i "$@"
 ' bash "$root" "$((1 + ${#binds[@]}))" "$checkout" "${binds[@]}" "${passed[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$checkout" "$@"
