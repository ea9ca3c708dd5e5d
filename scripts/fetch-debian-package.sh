#!/usr/bin/env bash
# Usage: scripts/fetch-debian-package.sh <package> <suite>
#
# Downloads one package from a Debian suite, usually not the machine's (the mirror is taken from
# the machine's own apt sources; apt runs with private state directories, nothing is installed)
# and unpacks it with `dpkg -x` into
#   ${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}/<package>-<suite>/
# then prints that directory. Idempotent: a second run prints the cached directory at once.
# Used by fetch-containerd.sh and fetch-runsc.sh.
set -euo pipefail

package="${1:-}"
suite="${2:-}"
if [ -z "$package" ] || [ -z "$suite" ]; then
  echo "usage: $0 <package> <suite>" >&2
  exit 2
fi

cache_root="${NIX_SNAPSHOTTER_TEST_CACHE:-/var/cache/nix-snapshotter-tests}"
target="$cache_root/$package-$suite"

if [ -f "$target/.complete" ]; then
  echo "$target"
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
  echo "fetch-debian-package: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-debian-package.XXXXXX")"
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

echo "fetch-debian-package: apt-get update ($suite from $mirror)" >&2
if ! apt-get "${apt_options[@]}" update -qq >&2; then
  # Seen in a fresh Debian 13 root on a machine whose mirror is a frozen copy of the archive: sid's
  # Release had passed its Valid-Until date. apt runs with the machine's own configuration, so
  # such a machine (and any root made on it) needs what the host's apt has for that mirror.
  echo "fetch-debian-package: apt-get update of $suite from $mirror failed; if apt says a Release" \
    "file is expired, the mirror is a frozen copy and apt must be told to accept it" \
    "(Acquire::Check-Valid-Until \"false\" in /etc/apt/apt.conf.d/)" >&2
  exit 1
fi
(cd "$work/download" && apt-get "${apt_options[@]}" download -qq "$package/$suite" >&2)

deb="$(find "$work/download" -maxdepth 1 -name "${package}_*.deb" | head -n 1)"
[ -n "$deb" ] || {
  echo "fetch-debian-package: apt-get download produced no $package .deb" >&2
  exit 1
}

# Unpack next to the final place, then rename: a concurrent run or an interrupted one never
# leaves a half-filled cache directory behind.
mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/.$package-$suite.XXXXXX")"
dpkg -x "$deb" "$staging"
cp "$deb" "$staging/"
touch "$staging/.complete"
if [ -f "$target/.complete" ]; then
  rm -rf "$staging"
else
  rm -rf "$target"
  mv "$staging" "$target"
fi
echo "$target"
