#!/usr/bin/env bash
# Usage: scripts/test-in-root.sh [--full] [--timeout MINUTES] <trixie|sid>
#
# The README's two commands on a fresh Debian machine of another release, as a new user would run
# them, for CI (docs/development.md, "A fresh Debian 13 root"):
#
#   1. root     a fresh copy of the suite's cached debootstrap root (scripts/suite-root.sh makes
#               and caches the base; every run copies it, so nothing of an earlier run is left);
#   2. clone    `git clone` of this checkout's HEAD (committed work only) into /root/src, a
#               mode-0700 folder of the copy;
#   3. enter    a new mount and PID namespace; the copy bind-mounted onto itself with /proc, /sys,
#               /dev and a fresh /run, then pivot_root into it (not chroot: a chrooted process may
#               not create user namespaces, which the rootless and gVisor tests need);
#   4. system-deps  scripts/system-deps.sh inside (apt, from the root's sources: the mirror of
#               this machine's apt sources, written by debootstrap);
#   5. demo     ./scripts/demo (it installs Debian's npm, Node 24 and pnpm, builds, runs hello and
#               redis through the daemon and the root's containerd);
#   6. e2e      the end-to-end suites that drive containerd and Nix (the selection below), or with
#               --full the whole test command (scripts/test without the Nix matrix).
#
# One summary line per part, then "test-in-root: <suite>: passed|failed". Exits non-zero when any
# part failed or the whole run exceeded the timeout (default 40 minutes, or
# $NIX_SNAPSHOTTER_ROOT_TIMEOUT). Everything is torn down by the run itself, also on failure,
# timeout or Ctrl-C: the processes die with the PID namespace (its first process is killed when
# this script's `unshare` goes), the mounts with the mount namespace, and the copy is deleted.
# The copy's Nix build users get uids of their own (30400+ for trixie, 30500+ for sid): Nix kills
# every process of a build user's uid, and the cached roots' numbers (30100+, 30200+) are in use
# whenever the Nix matrix runs at the same time. One run per suite at a time (a lock).
# Run as root. NIX_SNAPSHOTTER_ROOT_KEEP=1 keeps the copy (and its logs) after the run.
set -euo pipefail

# The e2e selection: every suite that drives containerd or Nix.
e2e_selection=(
  apps/nix-snapshotter
  apps/nix2container
  packages/containerd-client
  packages/nix-store
  packages/snapshotter/src/nix.e2e.test.ts
)

# --- Phase 3, as the first process of the new namespaces: mount, pivot, go on inside. -------
if [ "${1:-}" = "--enter" ]; then
  root="$2"
  shift 2
  mount --make-rprivate /
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  cd "$root"
  mkdir -p .old-root
  pivot_root . .old-root
  cd /
  umount -l /.old-root
  rmdir /.old-root
  exec /usr/bin/env -i "$@"
fi

# --- Phases 4 to 6, inside the root (as PID 1 of its PID namespace). ------------------------
if [ "${1:-}" = "--inside" ]; then
  full="$2"
  checkout=/root/src/nix-snapshotter
  summary=/root/test-in-root.summary
  : >"$summary"
  cd "$checkout"
  status=0
  line() { echo "$*" >>"$summary"; echo "test-in-root: $*" >&2; }

  started=$SECONDS
  code=0
  bash scripts/system-deps.sh || code=$?
  # The machine's extra certificate authorities (a proxy's), so that npm reaches its registry.
  if [ "$code" -eq 0 ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    update-ca-certificates >/dev/null || code=$?
  fi
  if [ "$code" -eq 0 ]; then line "system-deps: ok ($((SECONDS - started)) s)"
  else line "system-deps: failed, exit $code ($((SECONDS - started)) s)"; exit 1; fi

  started=$SECONDS
  code=0
  # A port nobody listens on (the network is the machine's).
  port=0
  for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
  done
  DEMO_REDIS_PORT="$port" ./scripts/demo || code=$?
  if [ "$code" -eq 0 ]; then line "demo: passed ($((SECONDS - started)) s)"
  else line "demo: failed, exit $code ($((SECONDS - started)) s)"; status=1; fi

  started=$SECONDS
  code=0
  results=/root/test-in-root.e2e.json
  rm -f "$results"
  if [ "$full" = 1 ]; then
    what="full test command"
    # scripts/test keeps vitest's summary to itself: the counts come from vitest's closing lines.
    set +e
    NIX_SNAPSHOTTER_MATRIX=0 bash scripts/test 2>&1 | tee /root/test-in-root.full.log
    code=${PIPESTATUS[0]}
    set -e
  else
    what="e2e ${e2e_selection[*]}"
    # The other containerd releases (1.6 from bookworm, 2.1 from sid) and gVisor's runsc, fetched
    # once before the tests: the harness fetches them at collection time in every test file's
    # worker at once, and a file whose fetch fails or times out skips (with the reason in its
    # name). Here a failure is one line of this run's output.
    fetch_started=$SECONDS
    fetched=()
    for release in bookworm sid; do
      if bash scripts/fetch-containerd.sh "$release" >/dev/null; then fetched+=("containerd-$release")
      else line "fetch: containerd from $release failed (its tests will skip)"; fi
    done
    if bash scripts/fetch-runsc.sh >/dev/null; then fetched+=(runsc-sid)
    else line "fetch: runsc from sid failed (the gVisor tests will skip)"; fi
    line "fetch: ${fetched[*]:-nothing} ($((SECONDS - fetch_started)) s)"
    started=$SECONDS
    # shellcheck source=bootstrap.sh
    BOOTSTRAP_SKIP_INSTALL=1 source scripts/bootstrap.sh
    set +e
    # verbose: skipped tests are listed by name, and their names say why they skip.
    pnpm run build >/dev/null &&
      NIX_SNAPSHOTTER_TEST_SUMMARY="$results" pnpm exec vitest run --project e2e \
        --reporter=verbose --reporter=./scripts/summary-reporter.ts "${e2e_selection[@]}"
    code=$?
    set -e
  fi
  # The counts, also as "passed failed skipped" for the closing "tests:" line outside.
  counts=""
  if [ -s "$results" ]; then
    counts="$(node -e '
      const s = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
      console.log(`${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped, nix ${s.nix}`);
    ' "$results" 2>/dev/null || true)"
  elif [ -s /root/test-in-root.full.log ]; then
    # vitest's closing line: "Tests  2 failed | 900 passed | 10 skipped (912)".
    counts="$(sed 's/\x1b\[[0-9;]*m//g' /root/test-in-root.full.log | grep -E '^ *Tests +[0-9]' | tail -n 1 |
      sed 's/^ *Tests *//')" || true
  fi
  number() { grep -oE "[0-9]+ $1" <<<"$counts" | head -n 1 | cut -d' ' -f1 || true; }
  echo "$(number passed) $(number failed) $(number skipped)" >/root/test-in-root.counts
  if [ "$code" -eq 0 ]; then line "$what: passed, ${counts:-no counts} ($((SECONDS - started)) s)"
  else line "$what: failed, exit $code, ${counts:-no counts} ($((SECONDS - started)) s)"; status=1; fi
  exit "$status"
fi

# --- Phases 1 and 2, on the machine. ------------------------------------------------------
usage() {
  echo "usage: $0 [--full] [--timeout MINUTES] <trixie|sid>" >&2
  exit 2
}
full=0
timeout_minutes="${NIX_SNAPSHOTTER_ROOT_TIMEOUT:-40}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --full) full=1; shift ;;
    --timeout) [ "$#" -ge 2 ] || usage; timeout_minutes="$2"; shift 2 ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ "$#" -eq 1 ] || usage
suite="$1"
case "$suite" in
  trixie) id_base=30400 ;;
  sid) id_base=30500 ;;
  *) usage ;;
esac
[[ "$timeout_minutes" =~ ^[1-9][0-9]*$ ]] || usage
if [ "$(id -u)" -ne 0 ]; then
  echo "test-in-root: must run as root (debootstrap, namespaces, mounts)" >&2
  exit 1
fi

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
checkout="$(cd "$(dirname "$script_path")/.." && pwd -P)"
cache="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
runs="$cache/runs"
mkdir -p "$runs"
all_started=$SECONDS
lines=()
phase() { lines+=("$*"); echo "test-in-root: $*" >&2; }

# One run per suite at a time: two copies would share the build users' uids.
exec 8>"$runs/.$suite.lock"
if ! flock -n 8; then
  echo "test-in-root: another run of $suite holds $runs/.$suite.lock; waiting" >&2
  flock 8
fi
# A run killed with -9 leaves its copy behind; nothing of it is mounted any more (its namespaces
# died with its processes).
for old in "$runs/$suite".*; do
  [ -d "$old" ] || continue
  if grep -qF " $old/" /proc/self/mountinfo; then
    echo "test-in-root: $old has mounts on this machine; leaving it" >&2
    continue
  fi
  echo "test-in-root: removing $old (an earlier run's)" >&2
  rm -rf --one-file-system "$old"
done

# Phase 1: the base (cached) and a fresh copy of it.
started=$SECONDS
base="$(bash "$checkout/scripts/suite-root.sh" path "$suite")"
phase "base root: $(cat "$base/.suite-root") at $base ($((SECONDS - started)) s)"
run="$(mktemp -d "$runs/$suite.XXXXXX")"
root="$run/root"
ns_pid=""
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
    # unshare's child (the namespace's first process) gets SIGKILL when unshare dies.
    kill -KILL "$ns_pid" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
  fi
  if [ "${NIX_SNAPSHOTTER_ROOT_KEEP:-0}" = 1 ]; then
    echo "test-in-root: kept $run" >&2
  elif grep -qF " $run/" /proc/self/mountinfo; then
    echo "test-in-root: $run still has mounts; not deleted" >&2
  else
    local removing=$SECONDS
    rm -rf --one-file-system "$run"
    echo "test-in-root: teardown: the copy deleted ($((SECONDS - removing)) s)" >&2
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
started=$SECONDS
cp -a --reflink=auto "$base" "$root"
rm -f "$root/.suite-root"
chmod 1777 "$root/tmp"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The copy is thrown away after the run: dpkg need not sync every file it unpacks (the apt part
# of the run took 5 + 7 minutes with the sync, under the load of other test runs).
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/test-in-root-unsafe-io"
# What this machine's apt says about its mirror's Release dates goes in too: a machine whose
# mirror is a frozen copy of the archive accepts expired Release files, and so must the root
# (the tests fetch containerd 2.1 from sid with apt). sid's Release is valid for a week only, and
# scripts/suite-root.sh accepts it expired too; the signatures are checked either way.
valid_until="$(apt-config dump Acquire::Check-Valid-Until 2>/dev/null |
  sed -n 's/^Acquire::Check-Valid-Until "\(.*\)";$/\1/p')"
if [ "$suite" = sid ] || [ "$valid_until" = false ]; then
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99test-in-root-valid-until"
fi
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
# The copy's build users: ids of their own (see the header), ten as system-deps.sh makes.
chroot "$root" /bin/bash -euc '
  base="$1"
  groupmod --gid "$base" nixbld
  for n in $(seq 1 10); do
    if getent passwd "nixbld$n" >/dev/null; then
      usermod --uid "$((base + n))" --gid nixbld "nixbld$n"
    else
      useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
        --uid "$((base + n))" --gid nixbld --groups nixbld --comment "Nix build user $n" "nixbld$n" 2>/dev/null
    fi
  done
  if [ -d /nix/store ]; then chgrp nixbld /nix/store; fi
' bash "$id_base"
phase "fresh root: copied to $root ($((SECONDS - started)) s)"

# Phase 2: a clean clone of HEAD in a folder only root can enter.
started=$SECONDS
head="$(git -C "$checkout" rev-parse HEAD)"
if [ -n "$(git -C "$checkout" status --porcelain)" ]; then
  echo "test-in-root: note: uncommitted changes in $checkout are not part of the run (HEAD only)" >&2
fi
mkdir -p "$root/root"
chmod 700 "$root/root"
install -d -m 700 "$root/root/src"
git clone --quiet --no-checkout --no-hardlinks "$checkout" "$root/root/src/nix-snapshotter"
git -C "$root/root/src/nix-snapshotter" checkout --quiet --detach "$head"
# The script that runs inside is this one (same version as the part outside).
install -m 755 "$script_path" "$root/usr/local/sbin/nix-snapshotter-test-in-root"
phase "clone: $head into /root/src/nix-snapshotter (mode 0700) ($((SECONDS - started)) s)"

# Phases 3 to 6.
passed_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
  LC_ALL=C.UTF-8 TMPDIR=/tmp DEBIAN_FRONTEND=noninteractive CI="${CI:-1}"
  NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt NIX_SNAPSHOTTER_SUITE="$suite")
for name in TERM NO_COLOR FORCE_COLOR; do
  [ -n "${!name+x}" ] && passed_env+=("$name=${!name}")
done
started=$SECONDS
code=0
# timeout signals unshare (its own process group); unshare's child is killed with it
# (--kill-child), and with that first process every process of the PID namespace.
timeout --kill-after=30 "${timeout_minutes}m" \
  unshare --mount --pid --fork --kill-child --propagation private -- \
  bash "$script_path" --enter "$root" "${passed_env[@]}" \
  bash /usr/local/sbin/nix-snapshotter-test-in-root --inside "$full" </dev/null &
ns_pid=$!
wait "$ns_pid" || code=$?
ns_pid=""
if [ -s "$root/root/test-in-root.summary" ]; then
  while IFS= read -r summary_line; do lines+=("$summary_line"); done <"$root/root/test-in-root.summary"
fi
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  lines+=("timed out after $timeout_minutes min (exit $code): the part running then was stopped")
fi
lines+=("inside the root: $((SECONDS - started)) s (exit $code)")

passed=0 failed=0 skipped=0
if [ -s "$root/root/test-in-root.counts" ]; then
  read -r passed failed skipped <"$root/root/test-in-root.counts" || true
fi
passed="${passed:-0}" failed="${failed:-0}" skipped="${skipped:-0}"
# A part that failed outside a test (the demo, apt, a timeout) counts as one failure.
if [ "$code" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

echo
echo "test-in-root: $suite, $((SECONDS - all_started)) s in all"
for summary_line in "${lines[@]}"; do echo "  $summary_line"; done
if [ "$code" -eq 0 ]; then
  echo "test-in-root: $suite: passed"
else
  echo "test-in-root: $suite: failed"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$code" -eq 0 ] || exit 1
