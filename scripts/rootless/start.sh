#!/usr/bin/env bash
# Usage (as the unprivileged user): scripts/rootless/start.sh
#
# Starts rootless containerd (2.x) and nix-snapshotter in one rootlesskit user + mount namespace,
# the layout the home-manager modules use:
#   containerd socket       $XDG_RUNTIME_DIR/containerd/containerd.sock
#   nix-snapshotter socket  $XDG_RUNTIME_DIR/nix-snapshotter/nix-snapshotter.sock
#   containerd root         $XDG_DATA_HOME/containerd
#   nix-snapshotter root    $XDG_DATA_HOME/nix-snapshotter
#   GC roots                /nix/var/nix/gcroots/per-user/$USER/nix-snapshotter
#   rootlesskit state       $XDG_RUNTIME_DIR/rootlesskit-containerd (child_pid: enter with
#                           scripts/rootless/nsenter.sh)
# The Nix store is reached through nix-daemon (NIX_REMOTE=daemon; NIX_DAEMON_SOCKET_PATH is
# honoured when set). Runs in the foreground until rootlesskit exits.
#
# Environment: CONTAINERD (containerd binary, default from PATH), NIX_SNAPSHOTTER (command for the
# daemon, default `nix-snapshotter`), ROOTLESSKIT_NET (default `host`: slirp4netns needs a usable
# /dev/net/tun), MOUNT_MODE (default `hardlink`).
set -euo pipefail

: "${XDG_RUNTIME_DIR:?XDG_RUNTIME_DIR must be set}"
XDG_DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
XDG_CONFIG_HOME="${XDG_CONFIG_HOME:-$HOME/.config}"
export XDG_RUNTIME_DIR XDG_DATA_HOME XDG_CONFIG_HOME
user="$(id -un)"

if [ "${1:-}" != "--inside" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "start.sh: run this as the unprivileged user" >&2
    exit 2
  fi
  mkdir -p "$XDG_RUNTIME_DIR/containerd" "$XDG_RUNTIME_DIR/nix-snapshotter" \
    "$XDG_DATA_HOME/containerd" "$XDG_DATA_HOME/nix-snapshotter" "$XDG_CONFIG_HOME/nix-snapshotter"
  rm -rf "$XDG_RUNTIME_DIR/rootlesskit-containerd"
  exec rootlesskit --net="${ROOTLESSKIT_NET:-host}" --copy-up=/etc --copy-up=/run \
    --state-dir="$XDG_RUNTIME_DIR/rootlesskit-containerd" \
    env NIX_SNAPSHOTTER_USER="$user" "$0" --inside
fi

# Inside the namespaces: uid 0 mapped to the user. Paths are chosen here (not by the daemon's
# defaults) because inside the namespace the user is "root".
export NIX_REMOTE=daemon
# rootlesskit's copy-up of /run leaves the host's entries (owned by the real root, unmapped here)
# as links: give containerd and ctr (FIFOs, runc state under /run/containerd) their own.
rm -rf /run/containerd /run/nix-snapshotter
mkdir -p /run/containerd /run/nix-snapshotter
config="$XDG_CONFIG_HOME/nix-snapshotter/config.toml"
cat >"$config" <<TOML
address = "$XDG_RUNTIME_DIR/nix-snapshotter/nix-snapshotter.sock"
root = "$XDG_DATA_HOME/nix-snapshotter"
gc_roots_dir = "/nix/var/nix/gcroots/per-user/$NIX_SNAPSHOTTER_USER/nix-snapshotter"
mount_mode = "${MOUNT_MODE:-hardlink}"
TOML
containerd_config="$XDG_CONFIG_HOME/nix-snapshotter/containerd.toml"
cat >"$containerd_config" <<TOML
version = 3
root = "$XDG_DATA_HOME/containerd"
state = "$XDG_RUNTIME_DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]

[grpc]
  address = "$XDG_RUNTIME_DIR/containerd/containerd.sock"

[proxy_plugins.nix]
  type = "snapshot"
  address = "$XDG_RUNTIME_DIR/nix-snapshotter/nix-snapshotter.sock"

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "linux/amd64"
  snapshotter = "nix"
TOML

# shellcheck disable=SC2086
${NIX_SNAPSHOTTER:-nix-snapshotter} --config "$config" &
snapshotter=$!
trap 'kill "$snapshotter" 2>/dev/null; wait "$snapshotter" 2>/dev/null' EXIT
"${CONTAINERD:-containerd}" --config "$containerd_config"
