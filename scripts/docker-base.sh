#!/usr/bin/env bash
# Makes the images' base when the official one cannot be pulled: an equivalent of python:3.11-slim
# built from Debian's own packages (debootstrap of bookworm, minbase, + python3.11, with the
# interpreter also at /usr/local/bin like the official image), imported with `docker import`.
# Usage: scripts/docker-base.sh <tag>   (e.g. nexus-local/python:3.11-slim)
set -euo pipefail
TAG="${1:?usage: docker-base.sh <tag>}"
DOCKER="${DOCKER:-docker}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then exit 0; fi
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
root="$(mktemp -d)"
trap 'rm -rf "$root" "$root.log"' EXIT
echo "docker-base: debootstrap bookworm into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
# apt inside the new root resolves python3.11's dependencies (debootstrap's --include does not).
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3.11 ca-certificates' \
  >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# What the official slim image has besides: python3/python on PATH in /usr/local/bin, no caches.
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" -c . | "$DOCKER" import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  -c 'CMD ["python3"]' - "$TAG" >/dev/null
echo "docker-base: $TAG" >&2
