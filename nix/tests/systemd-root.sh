#!/usr/bin/env bash
# Usage: nix/tests/systemd-root.sh <work dir> <units dir> [<directory to show read-only>...]
#
# Boots the machine's own systemd as PID 1 of a new PID and mount namespace, in a root made for
# it, so that nix/tests/nix.e2e.test.ts can `systemctl start` a unit rendered by our NixOS module
# under a real service manager (this machine's PID 1 is not systemd). Runs until killed; the
# caller kills the process whose id is written to <work dir>/pid (systemd, PID 1 inside), and
# the namespaces, their processes and mounts go with it.
#
# What systemd sees, and why (a systemd as PID 1 starts what a unit's default dependencies pull
# in: sysinit.target runs systemd-tmpfiles --remove, which empties /tmp, sysctl, binfmt, ...;
# none of that may reach the machine):
#   /           a tmpfs of its own (pivot_root), so nothing it writes outside the binds below
#               reaches the machine; /etc a copy of the machine's with every `*.wants` directory
#               and fstab emptied, plus <units dir>'s files (units, drop-in directories) in
#               /etc/systemd/system; /var, /run and /tmp empty tmpfs
#   /usr        the machine's, read-only, every `*.wants` directory under its units hidden by an
#               empty read-only tmpfs: a unit pulls in only what its own file names
#   /nix        the machine's, read-write: the registry builds with the machine's Nix store
#   /dev        a tmpfs with null, zero, full, random, urandom and tty bound in, its own devpts
#   /proc       a new proc (the PID namespace's) with /proc/sys read-only; /sys read-only except
#               the cgroup hierarchies, where systemd gets a cgroup of its own (<work dir>'s name)
#   extra dirs  read-only at the same path (the Node binary of the package under test)
# plus `container=other` (systemd's container mode: no udev, no kernel modules, no clock) and a
# capability bounding set without CAP_SYS_MODULE and CAP_SYS_TIME. The network namespace is
# the machine's: the unit's port is reached on 127.0.0.1.
#
# Talk to it with: nsenter -t "$(cat <work dir>/pid)" -m -p -r -w systemctl ...
# Run as root.
set -euo pipefail

# --- Inside the new namespaces, as their first process: build the root, then become systemd. --
if [ "${1:-}" = "--enter" ]; then
  work="$2"
  units="$3"
  shift 3
  root="$work/root"
  mount --make-rprivate /
  mkdir -p "$root"
  mount -t tmpfs -o mode=755 systemd-root "$root"
  mkdir -p "$root"/{usr,nix,etc,var,run,tmp,proc,sys,dev,root}
  for link in bin sbin lib lib64; do
    if [ -L "/$link" ]; then ln -s "$(readlink "/$link")" "$root/$link"; fi
  done

  mount --bind /usr "$root/usr"
  mount -o remount,bind,ro "$root/usr"
  while IFS= read -r wants; do
    mount -t tmpfs -o ro,mode=755 no-wants "$root$wants"
  done < <(find /usr/lib/systemd/system /usr/lib/systemd/user -maxdepth 1 -name '*.wants' -type d 2>/dev/null)

  mount --bind /nix "$root/nix"

  cp -a /etc/. "$root/etc/"
  find "$root/etc/systemd" -name '*.wants' -type d -prune -exec rm -rf {} +
  : >"$root/etc/fstab"
  mkdir -p "$root/etc/systemd/system"
  cp -r "$units"/. "$root/etc/systemd/system/"
  # The target systemd boots into: nothing but itself.
  printf '[Unit]\nDescription=nix-snapshotter tests: an empty boot target\nDefaultDependencies=no\n' \
    >"$root/etc/systemd/system/nix-snapshotter-tests.target"

  mount -t tmpfs -o mode=755 var "$root/var"
  mkdir -p "$root/var/lib" "$root/var/cache" "$root/var/log" "$root/var/tmp"
  chmod 1777 "$root/var/tmp"
  mount -t tmpfs -o mode=755 run "$root/run"
  mount -t tmpfs -o mode=1777 tmp "$root/tmp"

  mount -t tmpfs -o mode=755,nosuid dev "$root/dev"
  for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  mkdir -p "$root/dev/pts" "$root/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
  ln -s pts/ptmx "$root/dev/ptmx"
  mount -t tmpfs -o mode=1777 shm "$root/dev/shm"

  mount -t proc proc "$root/proc"
  mount --bind "$root/proc/sys" "$root/proc/sys"
  mount -o remount,bind,ro "$root/proc/sys"
  mount --rbind /sys "$root/sys"
  mount -o remount,bind,ro "$root/sys"

  for directory in "$@"; do
    mkdir -p "$root$directory"
    mount --bind "$directory" "$root$directory"
    mount -o remount,bind,ro "$root$directory"
  done

  cd "$root"
  mkdir -p .old-root
  pivot_root . .old-root
  cd /
  umount -l /.old-root
  rmdir /.old-root
  exec /usr/bin/env -i container=other PATH=/usr/sbin:/usr/bin \
    /usr/bin/setpriv --bounding-set -sys_module,-sys_time \
    /usr/lib/systemd/systemd --system --unit=nix-snapshotter-tests.target \
    --log-target=console --show-status=no
fi

# --- Outside: a cgroup of its own, then the namespaces. -------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "systemd-root: run as root" >&2
  exit 1
fi
work="$1"
units="$2"
shift 2
if [ ! -d "$work" ] || [ ! -d "$units" ]; then
  echo "systemd-root: usage: $0 <work dir> <units dir> [<read-only dir>...]" >&2
  exit 2
fi
name="nix-snapshotter-tests-$(basename "$work")"
# systemd in a container takes the cgroup it starts in as its root: give it an empty one in the
# hierarchies it manages (the named systemd one, the unified one), and remove them at the end
# (after moving this shell back to where it was).
declare -A previous=()
cleanup() {
  for hierarchy in "${!previous[@]}"; do
    echo $$ >"$hierarchy${previous[$hierarchy]}/cgroup.procs" 2>/dev/null || true
    find "$hierarchy/$name" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
trap cleanup EXIT
for hierarchy in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
  if [ -d "$hierarchy" ] && [ -w "$hierarchy" ]; then
    # /proc/self/cgroup: "9:name=systemd:/path" (v1, named), "0::/path" (unified).
    case "$hierarchy" in
      */unified) pattern='^0::' ;;
      *) pattern='^[0-9]+:name=systemd:' ;;
    esac
    previous[$hierarchy]="$(grep -E "$pattern" /proc/self/cgroup | head -1 | cut -d: -f3)"
    mkdir -p "$hierarchy/$name"
    echo $$ >"$hierarchy/$name/cgroup.procs"
  fi
done
script="$(readlink -f "$0")"
unshare --pid --fork --mount --propagation private "$script" --enter "$work" "$units" "$@" &
child=$!
# The PID of systemd as the machine sees it: unshare's only child.
for _ in $(seq 1 100); do
  pid="$(awk '{print $1}' "/proc/$child/task/$child/children" 2>/dev/null || true)"
  if [ -n "$pid" ]; then break; fi
  sleep 0.1
done
echo "$pid" >"$work/pid"
wait "$child"
