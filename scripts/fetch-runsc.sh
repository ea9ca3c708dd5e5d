#!/usr/bin/env bash
# Usage: scripts/fetch-runsc.sh
#
# Downloads Debian sid's `runsc` package (gVisor; a static binary that runs on bookworm) and
# unpacks it, without installing anything, into
#   /var/cache/nix-snapshotter-tests/runsc-sid/
# then prints the path of the `runsc` binary.
#
# The mirror is taken from the machine's own apt sources (no host name is written here); apt runs
# with private sources, lists and cache directories, so the system's apt state is untouched.
# Idempotent: a second run prints the cached binary at once.
set -euo pipefail

suite=sid
cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
target="$cache_root/runsc-$suite"
binary="$target/usr/bin/runsc"

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

# First Debian mirror URI of the machine's sources (deb822 `URIs:` lines, then one-line entries).
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
  echo "fetch-runsc: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-runsc.XXXXXX")"
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

echo "fetch-runsc: apt-get update ($suite from $mirror)" >&2
apt-get "${apt_options[@]}" update -qq >&2
(cd "$work/download" && apt-get "${apt_options[@]}" download -qq "runsc/$suite" >&2)

deb="$(find "$work/download" -maxdepth 1 -name 'runsc_*.deb' | head -n 1)"
[ -n "$deb" ] || {
  echo "fetch-runsc: apt-get download produced no runsc .deb" >&2
  exit 1
}

# Unpack next to the final place, then rename, so no half-filled cache directory is left.
mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/.runsc-$suite.XXXXXX")"
dpkg -x "$deb" "$staging"
cp "$deb" "$staging/"
if [ -x "$binary" ]; then
  rm -rf "$staging"
else
  rm -rf "$target"
  mv "$staging" "$target"
fi
"$binary" --version >&2
echo "$binary"
