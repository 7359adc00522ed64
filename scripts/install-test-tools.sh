#!/usr/bin/env bash
# The tools the test suite uses besides the servers: Prometheus and promtool (Debian's prometheus package),
# bubblewrap (the command sandbox), kubectl (checks our kustomize against the real one), node
# (the JavaScript bridge) and chromium (the web UI's browser tests drive Debian's build through
# Playwright, whose own browser download cannot work here). Debian packages are installed when missing and we are root; otherwise
# this says what is missing, and CI fails the tests that need it instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
want=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || want+=(prometheus)  # the server too: a test scrapes a live stack
command -v bwrap >/dev/null 2>&1 || want+=(bubblewrap)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v git >/dev/null 2>&1 || want+=(git)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
if [ ${#want[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: installing ${want[*]} (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    # --no-install-recommends: promtool is what we need; no service is started in a container.
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  else
    echo "install-test-tools: missing ${want[*]} (install them, e.g. apt-get install ${want[*]})" >&2
  fi
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install-test-tools: kubectl is missing; the kustomize comparison needs it" >&2
fi
# The official AsyncAPI parser, which validates proto/asyncapi.json (npm, versions locked).
if command -v npm >/dev/null 2>&1 && [ ! -d scripts/asyncapi/node_modules/@asyncapi/parser ]; then
  echo "install-test-tools: installing the AsyncAPI parser (npm ci)" >&2
  (cd scripts/asyncapi && npm ci --no-audit --no-fund --silent)
fi
