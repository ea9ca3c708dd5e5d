#!/usr/bin/env bash
# Usage: scripts/test-matrix.sh [--host-summary FILE] [CELL...]
#
# The Nix matrix (docs/development.md): the Nix-facing end-to-end tests run again against the
# Nix of newer Debian suites, each inside a minimal root of that suite (scripts/suite-root.sh),
# with that suite's containerd and runc:
#
#   cell            Nix                    store
#   trixie          trixie's nix-bin       single-user (root, the local store, no daemon)
#   sid             sid's nix-bin          single-user
#   sid-daemon      sid's nix-bin          nix-daemon, NIX_REMOTE=daemon (as NixOS runs it)
#   trixie-daemon   trixie's nix-bin       nix-daemon, NIX_REMOTE=daemon
#
# Each cell runs packages/nix-store's e2e suite and, from apps/nix-snapshotter's containerd e2e,
# "closure substituted during unpack" with the root's containerd. Default cells: trixie, sid,
# sid-daemon, trixie-daemon. Run as root. scripts/test calls it after the machine's own run and
# passes that run's summary (--host-summary), so that the closing lines list every Nix the whole
# run used, then one total line "tests: N passed, N failed, N skipped" (last, for CI's parser).
# Exits non-zero when any cell failed or could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The tests each cell runs (paths and a -t pattern; see docs/development.md).
matrix_files=(packages/nix-store/src/nix-store.e2e.test.ts apps/nix-snapshotter/src/containerd.e2e.test.ts)

# --- Inside a suite root: one cell. ---------------------------------------------------------
if [ "${1:-}" = "--inside" ]; then
  # One cell at a time per root: two runs sharing a root share its store and daemon socket.
  # flock -o holds the lock itself, so that no process left behind by a test keeps it.
  if [ -z "${TEST_MATRIX_LOCKED:-}" ]; then
    TEST_MATRIX_LOCKED=1 exec flock -o /nix/var/nix/test-matrix.lock bash "$0" "$@"
  fi
  store="$2"
  summary="$3"
  # The root's own containerd is the only one this cell uses; other releases are absent here.
  containerd_line="$(containerd --version)"
  containerd_version="$(sed -n 's/.* v\{0,1\}\([0-9]\+\.[0-9]\+\)\.[0-9].*/\1/p' <<<"$containerd_line")"
  case "$containerd_version" in
    1.7) export NIX_SNAPSHOTTER_CONTAINERD_1_7_DIR=/usr/bin ;;
    2.*)
      # The harness knows containerd 2.x as "2.1" (config version 3, Transfer unpack).
      containerd_version=2.1
      export NIX_SNAPSHOTTER_CONTAINERD_2_1_DIR=/usr/bin
      ;;
    *)
      echo "test-matrix: containerd ${containerd_line} is not one the tests know" >&2
      exit 1
      ;;
  esac
  for other in 1_6 1_7 2_1; do
    variable="NIX_SNAPSHOTTER_CONTAINERD_${other}_DIR"
    [ -n "${!variable:-}" ] || export "$variable=/nonexistent/containerd-${other/_/.}-not-in-this-root"
  done
  echo "test-matrix: $(nix-store --version), $store store, $containerd_line" >&2

  daemon_pid=""
  if [ "$store" = daemon ]; then
    # nix-daemon as NixOS runs it (root, build users of nixbld); clients connect to its socket.
    socket=/nix/var/nix/daemon-socket/socket
    rm -f "$socket"
    nix-daemon >/tmp/nix-daemon.log 2>&1 &
    daemon_pid=$!
    trap 'kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true' EXIT
    export NIX_REMOTE=daemon
    # Ready when it answers a client, not when the socket file exists.
    probe=/nix/store/0000000000000000000000000000000a-probe
    for attempt in $(seq 1 101); do
      nix-store --check-validity --print-invalid "$probe" >/dev/null 2>&1 && break
      if [ "$attempt" -eq 101 ]; then
        cat /tmp/nix-daemon.log >&2
        echo "test-matrix: nix-daemon did not answer within 10 s" >&2
        exit 1
      fi
      kill -0 "$daemon_pid" 2>/dev/null || {
        cat /tmp/nix-daemon.log >&2
        echo "test-matrix: nix-daemon exited" >&2
        exit 1
      }
      sleep 0.1
    done
  fi

  status=0
  NIX_SNAPSHOTTER_TEST_SUMMARY="$summary" node_modules/.bin/vitest run --project e2e \
    "${matrix_files[@]}" \
    -t "nix-store against real Nix|containerd ${containerd_version}: closure substituted during unpack" ||
    status=$?
  if [ -n "$daemon_pid" ] && [ "$status" -ne 0 ]; then
    echo "test-matrix: nix-daemon log (last 40 lines):" >&2
    tail -n 40 /tmp/nix-daemon.log >&2
  fi
  exit "$status"
fi

# --- On the machine: every cell, then the closing lines. ------------------------------------
host_summary=""
if [ "${1:-}" = "--host-summary" ]; then
  host_summary="$2"
  shift 2
fi
cells=("$@")
[ "${#cells[@]}" -gt 0 ] || cells=(trixie sid sid-daemon trixie-daemon)
for cell in "${cells[@]}"; do
  case "$cell" in
    trixie | sid | trixie-daemon | sid-daemon) ;;
    *)
      echo "test-matrix: unknown cell $cell (trixie, sid, sid-daemon, trixie-daemon)" >&2
      exit 2
      ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "test-matrix: must run as root" >&2
  exit 1
fi

# Inside a root, Node is the checkout's .toolchain Node 24 (a build from the npm registry runs on
# any glibc >= 2.28); a system Node (Debian's links the machine's own libraries) would not run.
if [ ! -x .toolchain/node_modules/.bin/node ]; then
  echo "test-matrix: no .toolchain/node_modules/.bin/node in this checkout: install it with" >&2
  echo "  npm install --no-save --prefix .toolchain node@24  (scripts/bootstrap.sh does when the system Node is older than 22)" >&2
  exit 1
fi

share="$(mktemp -d "${TMPDIR:-/tmp}/test-matrix.XXXXXX")"
trap 'rm -rf "$share"' EXIT
lines=()
total_passed=0
total_failed=0
total_skipped=0
status=0
started=$SECONDS

add_summary() {
  local file="$1" label="$2" exit_code="$3"
  local nix where store passed failed skipped
  if [ -s "$file" ] && read -r nix where store passed failed skipped < <(
    node -e '
      const s = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"));
      console.log([s.nix, s.where, s.store, s.passed, s.failed, s.skipped].join(" "));
    ' "$file"
  ); then
    lines+=("nix $nix ($where, $store): $passed passed, $failed failed, $skipped skipped")
  else
    # The run ended before its reporter wrote anything (a root not made, a crash): one failure.
    lines+=("nix ? ($label): no test results (exit $exit_code)")
    passed=0 failed=1 skipped=0
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
}

if [ -n "$host_summary" ]; then
  add_summary "$host_summary" "host" 0
fi

# Make the roots first, all at once (mostly downloads; minutes each on a fresh machine, nothing
# once cached). A root that cannot be made fails its cells below, with the reason printed here.
roots_started=$SECONDS
suites=()
for cell in "${cells[@]}"; do
  suite="${cell%-daemon}"
  [[ " ${suites[*]} " == *" $suite "* ]] || suites+=("$suite")
done
pids=()
for suite in "${suites[@]}"; do
  bash scripts/suite-root.sh path "$suite" >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
echo "test-matrix: roots ${suites[*]} ready in $((SECONDS - roots_started)) s" >&2

for cell in "${cells[@]}"; do
  case "$cell" in
    trixie | sid) suite="$cell" store=single-user ;;
    trixie-daemon | sid-daemon) suite="${cell%-daemon}" store=daemon ;;
    *)
      echo "test-matrix: unknown cell $cell (trixie, sid, sid-daemon, trixie-daemon)" >&2
      exit 2
      ;;
  esac
  cell_started=$SECONDS
  echo "test-matrix: cell $cell ($suite root, $store store)" >&2
  code=0
  bash scripts/suite-root.sh run "$suite" --bind "$share" -- \
    bash scripts/test-matrix.sh --inside "$store" "$share/$cell.json" || code=$?
  [ "$code" -eq 0 ] || status=1
  echo "test-matrix: cell $cell took $((SECONDS - cell_started)) s (exit $code)" >&2
  add_summary "$share/$cell.json" "$suite, $store" "$code"
done

echo
echo "Nix matrix: ${#cells[@]} cell(s) in $((SECONDS - started)) s"
for line in "${lines[@]}"; do echo "$line"; done
echo "tests: $total_passed passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ] || status=1
exit "$status"
