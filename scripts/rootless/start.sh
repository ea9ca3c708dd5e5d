#!/usr/bin/env bash
# Usage (as the unprivileged user): scripts/rootless/start.sh
#
# Starts rootless containerd (1.7 or 2.x) and nix-snapshotter in one rootlesskit user + mount
# (+ network) namespace: the setup of the home-manager and NixOS rootless modules
# (nix/modules/common/rootless.nix), with the same rootlesskit flags, the same bind mounts of
# per-user directories over the system paths, and the same configs. Seen from the host:
#   containerd socket       $XDG_RUNTIME_DIR/containerd/containerd.sock   (/run/containerd inside)
#   nix-snapshotter socket  $XDG_RUNTIME_DIR/nix-snapshotter/nix-snapshotter.sock
#   containerd root         $XDG_DATA_HOME/containerd                     (/var/lib/containerd)
#   nix-snapshotter root    $XDG_DATA_HOME/nix-snapshotter
#   GC roots                /nix/var/nix/gcroots/per-user/$USER/nix-snapshotter
#   rootlesskit state       $XDG_RUNTIME_DIR/containerd-rootless (child_pid: enter with
#                           scripts/rootless/nsenter.sh)
# The Nix store is reached through nix-daemon (NIX_REMOTE=daemon; NIX_DAEMON_SOCKET_PATH is
# honoured when set). Runs in the foreground until rootlesskit exits.
#
# Environment: CONTAINERD (containerd binary, default from PATH), NIX_SNAPSHOTTER (command for the
# daemon, default `nix-snapshotter`; empty: do not start it, as the modules run it as its own unit
# through nsenter.sh), ROOTLESSKIT_NET (`slirp4netns`, the default, or `host`; slirp4netns needs
# /dev/net/tun usable by the user), MOUNT_MODE (default `bind`, the daemon's own default),
# FUSE_OVERLAYFS (`true`: fuse-overlayfs instead of the kernel's overlay), NIX_SNAPSHOTTER_CONFIG
# and CONTAINERD_CONFIG (config files to use instead of the generated ones).
set -euo pipefail

# containerd finds its shim (containerd-shim-runc-v2) through PATH before looking beside itself.
# A shim older than containerd 1.7 (Debian 12's /usr/bin one is 1.6.20) ignores a mount's `target`
# and mounts every store-path bind of `bind` mode over the rootfs itself, read-only. Put the
# directory of the containerd we run first, so that it gets its own shim.
containerd_binary="$(command -v "${CONTAINERD:-containerd}")" || {
  echo "start.sh: containerd not found (set CONTAINERD)" >&2
  exit 2
}
CONTAINERD="$containerd_binary"
PATH="$(dirname "$containerd_binary"):$PATH"
export CONTAINERD PATH
shim="$(command -v containerd-shim-runc-v2 || true)"
if [ "${MOUNT_MODE:-bind}" = bind ] && [ -n "$shim" ]; then
  shim_version="$("$shim" -v 2>/dev/null | sed -n 's/^ *Version: *v\{0,1\}\([0-9]*\.[0-9]*\).*/\1/p')"
  case "$shim_version" in
    0.* | 1.[0-6])
      echo "start.sh: $shim is containerd $shim_version's shim, which ignores mount targets:" \
        "bind mode needs containerd >= 1.7's shim (or set MOUNT_MODE=hardlink)" >&2
      exit 2
      ;;
  esac
fi

: "${XDG_RUNTIME_DIR:?XDG_RUNTIME_DIR must be set}"
XDG_DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
XDG_CONFIG_HOME="${XDG_CONFIG_HOME:-$HOME/.config}"
export XDG_RUNTIME_DIR XDG_DATA_HOME XDG_CONFIG_HOME
user="$(id -un)"

# Per-user directories, bind-mounted inside the namespaces over the system paths the configs
# name (the home-manager/NixOS modules' bindMounts, in the same order: parents first).
bind_mounts=(
  "$XDG_CONFIG_HOME/cni:/etc/cni"
  "$XDG_RUNTIME_DIR/containerd:/run/containerd"
  "$XDG_RUNTIME_DIR/nix-snapshotter:/run/nix-snapshotter"
  "$XDG_DATA_HOME/cni:/var/lib/cni"
  "$XDG_DATA_HOME/containerd:/var/lib/containerd"
  "$XDG_DATA_HOME/nix-snapshotter:/var/lib/containerd/io.containerd.snapshotter.v1.nix"
)

if [ "${1:-}" != "--inside" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "start.sh: run this as the unprivileged user" >&2
    exit 2
  fi
  for mount in "${bind_mounts[@]}"; do mkdir -p "${mount%%:*}"; done
  mkdir -p "$XDG_CONFIG_HOME/nix-snapshotter"
  network=(--net=host)
  if [ "${ROOTLESSKIT_NET:-slirp4netns}" = slirp4netns ]; then
    network=(--net=slirp4netns --mtu=65520 --slirp4netns-sandbox=auto --slirp4netns-seccomp=auto
      --disable-host-loopback --port-driver=builtin)
  elif [ "$ROOTLESSKIT_NET" != host ]; then
    echo "start.sh: ROOTLESSKIT_NET must be slirp4netns or host" >&2
    exit 2
  fi
  exec rootlesskit --state-dir="$XDG_RUNTIME_DIR/containerd-rootless" "${network[@]}" \
    --copy-up=/etc --copy-up=/run --copy-up=/var/lib --propagation=rslave \
    env NIX_SNAPSHOTTER_USER="$user" "$0" --inside
fi

# Inside the namespaces: uid 0 mapped to the user. rootlesskit's copy-up leaves the host's entries
# of /etc, /run and /var/lib as symbolic links to directories of the real root (unmapped here):
# replace the ones we mount over.
for mount in "${bind_mounts[@]}"; do
  source="${mount%%:*}"
  mount_point="${mount#*:}"
  if [ -L "$mount_point" ]; then rm -f "$mount_point"; fi
  mkdir -p "$mount_point"
  mount --bind "$source" "$mount_point"
done

# The Nix store is root's: reach it through nix-daemon.
export NIX_REMOTE=daemon
# The modules' default settings (nix/modules/common/lib.nix), rendered here because the user's
# name goes into gc_roots_dir: inside the namespace the daemon is uid 0, and its own default
# would be root's gcroots directory.
config="${NIX_SNAPSHOTTER_CONFIG:-$XDG_CONFIG_HOME/nix-snapshotter/config.toml}"
if [ -z "${NIX_SNAPSHOTTER_CONFIG:-}" ]; then
  cat >"$config" <<TOML
address = "/run/nix-snapshotter/nix-snapshotter.sock"
root = "/var/lib/containerd/io.containerd.snapshotter.v1.nix"
gc_roots_dir = "/nix/var/nix/gcroots/per-user/$NIX_SNAPSHOTTER_USER/nix-snapshotter"
mount_mode = "${MOUNT_MODE:-bind}"
fuse_overlayfs = ${FUSE_OVERLAYFS:-false}

[image_service]
enable = true
containerd_address = "/run/containerd/containerd.sock"
TOML
fi
containerd_config="${CONTAINERD_CONFIG:-$XDG_CONFIG_HOME/nix-snapshotter/containerd.toml}"
if [ -z "${CONTAINERD_CONFIG:-}" ]; then
  cat >"$containerd_config" <<TOML
version = 2

[plugins."io.containerd.grpc.v1.cri"]
disable_apparmor = true
disable_cgroup = true
restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
default_runtime_name = "runc"
snapshotter = "nix"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.images"]
snapshotter = "nix"

[plugins."io.containerd.nri.v1.nri"]
disable = true

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
platform = "linux/$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
snapshotter = "nix"

[proxy_plugins.nix]
address = "/run/nix-snapshotter/nix-snapshotter.sock"
type = "snapshot"
TOML
fi

# Both run in the background so that a TERM (or INT, HUP) to this script stops them in order and
# it exits only when they have: containerd first, then the snapshotter it uses.
snapshotter=""
if [ -n "${NIX_SNAPSHOTTER-nix-snapshotter}" ]; then
  # shellcheck disable=SC2086
  ${NIX_SNAPSHOTTER:-nix-snapshotter} --config "$config" &
  snapshotter=$!
  # containerd's proxy plugin dials the socket once at its first call and, if nobody listens yet,
  # fails that call and backs off (seen: an import failing with "dial ... timeout" when
  # containerd won the race). Start containerd once the daemon listens, as the modules' units
  # are ordered (Type=notify).
  socket="$(sed -n 's/^address *= *"\(.*\)"$/\1/p' "$config" | head -n 1)"
  socket="${socket:-/run/nix-snapshotter/nix-snapshotter.sock}"
  for _ in $(seq 600); do
    [ -S "$socket" ] && break
    if ! kill -0 "$snapshotter" 2>/dev/null; then
      wait "$snapshotter" || true
      echo "start.sh: nix-snapshotter exited before it listened on $socket" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [ ! -S "$socket" ]; then
    echo "start.sh: nix-snapshotter did not listen on $socket within 60 s" >&2
    kill -TERM "$snapshotter" 2>/dev/null || true
    wait "$snapshotter" || true
    exit 1
  fi
fi
"$CONTAINERD" --config "$containerd_config" &
containerd=$!
trap 'kill -TERM "$containerd" 2>/dev/null || true' TERM INT HUP
status=0
while kill -0 "$containerd" 2>/dev/null; do
  wait "$containerd" || status=$?
done
if [ -n "$snapshotter" ]; then
  kill -TERM "$snapshotter" 2>/dev/null || true
  wait "$snapshotter" || true
fi
exit "$status"
