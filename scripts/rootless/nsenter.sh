#!/usr/bin/env bash
# Usage (as the user): scripts/rootless/nsenter.sh <command...>
# Runs a command inside the namespaces of scripts/rootless/start.sh (what
# containerd-rootless-setuptool.sh nsenter does): `ctr run` must, because its stdio FIFOs live
# under the namespace's own /run.
set -euo pipefail
: "${XDG_RUNTIME_DIR:?XDG_RUNTIME_DIR must be set}"
pid="$(cat "$XDG_RUNTIME_DIR/containerd-rootless/child_pid")"
namespaces=(--user --mount)
# With rootlesskit --net=host the child keeps the host's network namespace, which the user may
# not enter again: join the network namespace only when rootlesskit made one.
if [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ]; then
  namespaces+=(--net)
fi
exec nsenter "${namespaces[@]}" --target "$pid" -- "$@"
