#!/usr/bin/env bash
# Builds every service image from its Dockerfile (deploy/docker/), unchanged.
# Docker's engine comes from Debian's packages (docker.io) and is started when it is not running.
# The bases are build arguments: the official python:3.11-slim and uv images by default; when they
# cannot be pulled here, an equivalent Python base is made from Debian's packages
# (scripts/docker-base.sh) and the uv image from the uv binary this project already installed.
# Usage: scripts/images.sh [service ...]   (default: all five); prints one "name size" line each.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=("$@")
[ ${#SERVICES[@]} -gt 0 ] || SERVICES=(core-api worker agent-runner board-sync telegram-gateway)
TAG="${NEXUS_IMAGE_TAG:-dev}"
export DOCKER_BUILDKIT=1

# A client that speaks BuildKit without the buildx plugin: Debian's, when the one on PATH lacks it.
DOCKER="${DOCKER:-docker}"
if ! "$DOCKER" buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
export DOCKER

if ! "$DOCKER" info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "images: Docker's engine is missing (apt-get install docker.io)" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  echo "images: starting dockerd" >&2
  (nohup dockerd >"${TMPDIR:-/tmp}/nexus-dockerd.log" 2>&1 &)
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$DOCKER" info >/dev/null 2>&1 || { echo "images: dockerd did not start (see ${TMPDIR:-/tmp}/nexus-dockerd.log)" >&2; exit 1; }
fi

PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim}"
UV_VERSION="$(uv --version 2>/dev/null | awk '{print $2}')"
UV_IMAGE="${UV_IMAGE:-ghcr.io/astral-sh/uv:${UV_VERSION:-0.13.9}}"
if ! "$DOCKER" image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 && ! timeout 60 "$DOCKER" pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
  PYTHON_IMAGE="nexus-local/python:3.11-slim"
  scripts/docker-base.sh "$PYTHON_IMAGE"
fi
if ! "$DOCKER" image inspect "$UV_IMAGE" >/dev/null 2>&1 && ! timeout 60 "$DOCKER" pull -q "$UV_IMAGE" >/dev/null 2>&1; then
  UV_IMAGE="nexus-local/uv:${UV_VERSION}"
  if ! "$DOCKER" image inspect "$UV_IMAGE" >/dev/null 2>&1; then
    ctx="$(mktemp -d)"; trap 'rm -rf "$ctx"' EXIT
    cp "$(command -v uv)" "$ctx/uv"
    printf 'FROM scratch\nCOPY uv /uv\n' > "$ctx/Dockerfile"
    "$DOCKER" build -q -t "$UV_IMAGE" "$ctx" >/dev/null
  fi
fi

# Registries reached through a TLS-inspecting proxy need its CA inside the build (a build secret).
CA_ARGS=()
[ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ] && CA_ARGS=(--secret "id=ca_bundle,src=$SSL_CERT_FILE")

for s in "${SERVICES[@]}"; do
  "$DOCKER" build --network host -q "${CA_ARGS[@]}" -f "deploy/docker/$s.Dockerfile" \
    --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg UV_IMAGE="$UV_IMAGE" \
    -t "nexus-$s:$TAG" . >/dev/null
  echo "nexus-$s:$TAG $("$DOCKER" image inspect -f '{{.Size}}' "nexus-$s:$TAG")"
done
