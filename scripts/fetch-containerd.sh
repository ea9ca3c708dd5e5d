#!/usr/bin/env bash
# Usage: scripts/fetch-containerd.sh <suite>
#
# Downloads Debian's `containerd` package from a newer suite (trixie -> 1.7.x, sid -> 2.1.x) and
# unpacks it, without installing anything, into
#   /var/cache/nix-snapshotter-tests/containerd-<suite>/
# then prints the directory holding `containerd`, `containerd-shim-runc-v2` and `ctr`.
#
# The mirror is taken from the machine's own apt sources (no host name is written here); apt runs
# with private sources, lists and cache directories, so the system's apt state is untouched.
# Idempotent: a second run prints the cached directory at once.
#
# Only containerd's own binaries are used from the newer suite: its runc needs a newer glibc than
# bookworm's, so put the printed directory on PATH *after* the directory of bookworm's runc, or
# pass the binaries by full path (the test harness does the latter).
set -euo pipefail

suite="${1:-}"
case "$suite" in
  trixie | sid | forky | testing | unstable) ;;
  *)
    echo "usage: $0 <trixie|sid>" >&2
    exit 2
    ;;
esac

cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
target="$cache_root/containerd-$suite"
bin_dir="$target/usr/bin"

if [ -x "$bin_dir/containerd" ] && [ -x "$bin_dir/ctr" ] && [ -x "$bin_dir/containerd-shim-runc-v2" ]; then
  echo "$bin_dir"
  exit 0
fi

# First Debian mirror URI of the machine's sources: deb822 files (`URIs:` lines) and one-line
# `deb <uri> <suite> ...` entries. Security mirrors do not carry trixie/sid's main archive.
find_mirror() {
  local file uri
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    while read -r uri; do
      case "$uri" in
        *security*) ;;
        */debian | */debian/) echo "${uri%/}"; return 0 ;;
      esac
    done < <(sed -n 's/^URIs:[[:space:]]*//p' "$file" | tr ' ' '\n')
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    while read -r uri; do
      case "$uri" in
        *security*) ;;
        */debian | */debian/) echo "${uri%/}"; return 0 ;;
      esac
    done < <(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$file")
  done
  return 1
}

mirror="$(find_mirror)" || {
  echo "fetch-containerd: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-containerd.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d" \
  "$work/etc/sources.list.d" "$work/download"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] $mirror $suite main" >"$work/etc/sources.list"

apt_options=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list"
  -o "Dir::Etc::SourceParts=$work/etc/sources.list.d"
  -o "Dir::Etc::Preferences=$work/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::State::Status=/var/lib/dpkg/status"
  -o "Dir::Cache=$work/cache"
  -o "APT::Get::List-Cleanup=false"
  -o "Debug::NoLocking=true"
  -o "APT::Sandbox::User=root"
)

echo "fetch-containerd: apt-get update ($suite from $mirror)" >&2
apt-get "${apt_options[@]}" update -qq >&2
(cd "$work/download" && apt-get "${apt_options[@]}" download -qq "containerd/$suite" >&2)

deb="$(find "$work/download" -maxdepth 1 -name 'containerd_*.deb' | head -n 1)"
[ -n "$deb" ] || {
  echo "fetch-containerd: apt-get download produced no containerd .deb" >&2
  exit 1
}

# Unpack next to the final place, then rename: a concurrent run or an interrupted one never
# leaves a half-filled cache directory behind.
mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/.containerd-$suite.XXXXXX")"
dpkg -x "$deb" "$staging"
cp "$deb" "$staging/"
if [ -x "$bin_dir/containerd" ]; then
  rm -rf "$staging"
else
  rm -rf "$target"
  mv "$staging" "$target"
fi
"$bin_dir/containerd" --version >&2
echo "$bin_dir"
