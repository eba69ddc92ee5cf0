#!/usr/bin/env bash
# debian-base.sh [--slim] [--include PKG,...] [--rebuild] TAG
#
# Makes a Debian 12 (bookworm) base image for Podman from the Debian mirror this machine's
# apt already uses, since no image registry is reachable: `mmdebstrap --variant=minbase`
# into a tarball, then `podman import` as TAG. Used by tests/deploy/dockerfile_image.py
# (TAG debian:12-slim, the name deploy/Dockerfile's FROM uses, so that
# `podman build --pull=never` finds it) and by deploy/fresh-check.sh.
#
# The image holds the Essential and Priority: required packages plus apt (and --include's),
# without apt lists. --slim makes it close to Docker Hub's debian:12-slim: no
# documentation, man pages or locales (the same dpkg path-excludes as the slim image, kept
# in /etc/dpkg/dpkg.cfg.d/ for what is installed later). The sources are the host's
# bookworm, bookworm-updates and bookworm-security entries (from /etc/apt/sources.list and
# sources.list.d, one-line or deb822 format); other repositories of the host are left out.
#
# An image already stored under TAG is kept unless --rebuild is given. Needs root,
# mmdebstrap and podman (deploy/install-deps.sh installs them). About a minute.
set -euo pipefail

include=""
rebuild=0
slim=()
while [ $# -gt 1 ]; do
  case "$1" in
    --slim)
      # The path-excludes of Docker Hub's slim images (/etc/dpkg/dpkg.cfg.d/docker there).
      slim=(--dpkgopt='path-exclude=/usr/share/doc/*'
            --dpkgopt='path-include=/usr/share/doc/*/copyright'
            --dpkgopt='path-exclude=/usr/share/man/*'
            --dpkgopt='path-exclude=/usr/share/groff/*'
            --dpkgopt='path-exclude=/usr/share/info/*'
            --dpkgopt='path-exclude=/usr/share/lintian/*'
            --dpkgopt='path-exclude=/usr/share/locale/*'
            --dpkgopt='path-include=/usr/share/locale/locale.alias')
      shift ;;
    --include) include=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    *) break ;;
  esac
done
if [ $# -ne 1 ]; then
  sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
fi
tag=$1

for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || { echo "debian-base: $tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "debian-base: needs root (mmdebstrap, podman import)" >&2; exit 1; }

old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if [ $rebuild -eq 0 ] && [ -n "$old" ]; then
  echo "debian-base: $tag is there (${old:0:12}); --rebuild makes it anew"
  exit 0
fi

# The host's Debian entries as one-line sources ("deb URI SUITE COMPONENTS").
debian_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 4 { print }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: one stanza per paragraph; Types, URIs, Suites and Components may list
    # several values each.
    awk '
      function flush(   i, j, k, nt, nu, ns, t, u, s) {
        if (enabled != "no" && types != "") {
          nt = split(types, t, " "); nu = split(uris, u, " "); ns = split(suites, s, " ")
          for (i = 1; i <= nt; i++) if (t[i] == "deb")
            for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++)
              print "deb " u[j] " " s[k] " " comps
        }
        types = uris = suites = comps = enabled = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]/ { next }
      {
        key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
        if (key == "types") types = $0
        else if (key == "uris") uris = $0
        else if (key == "suites") suites = $0
        else if (key == "components") comps = $0
        else if (key == "enabled") enabled = tolower($0)
      }
      END { flush() }' "$f"
  done
}

work=$(mktemp -d /var/tmp/postern-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
debian_sources | awk '$3 ~ /^bookworm(-updates|-security)?$/' | sort -u >"$work/sources.list"
if ! grep -q ' bookworm ' "$work/sources.list"; then
  echo "debian-base: no bookworm entry in /etc/apt/sources.list(.d): which Debian mirror does this machine use?" >&2
  exit 1
fi
what="mmdebstrap --variant=minbase bookworm${include:+ --include=$include}${slim:+ (slim)}"
echo "debian-base: $what from:"
sed 's/^/  /' "$work/sources.list"

start=$SECONDS
mmdebstrap --variant=minbase --quiet --format=tar ${include:+--include="$include"} "${slim[@]}" \
  bookworm "$work/base.tar" "$work/sources.list"
podman import --quiet --change 'CMD ["bash"]' --change "LABEL org.postern.base=\"$what\"" \
  "$work/base.tar" "$tag" >/dev/null
# The image this one replaces, unless something still uses it (a container, an image
# built on it): --rebuild on every run would otherwise leave one behind each time.
new=$(podman image inspect --format '{{.Id}}' "$tag")
if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
echo "debian-base: $tag imported ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'), $((SECONDS - start)) s)"
