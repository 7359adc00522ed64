#!/usr/bin/env bash
# Installs the servers Nexus runs on, once per machine, into a cache shared by every
# checkout (NEXUS_TOOLS_DIR, default ~/.cache/nexus/bin): nats-server and FerretDB v1 (with its
# SQLite and PostgreSQL handlers); Debian's PostgreSQL, which FerretDB runs on by default
# (docs/storage.md says why); and the distribution's bubblewrap, which sandboxes agent commands.
# No NATS exporter is built: the Go module proxy refuses nats-io's prometheus-nats-exporter, so core-api
# reads nats-server's monitoring endpoint itself (docs/observability.md).
set -euo pipefail
BIN="${NEXUS_TOOLS_DIR:-$HOME/.cache/nexus/bin}"
NATS_VERSION="${NATS_VERSION:-v2.15.2}"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
mkdir -p "$BIN"

# bubblewrap: the sandbox around every agent command (docs/security-commands.md). Without it the
# runner falls back to Landlock (or rlimits only) and says so in every run.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: installing bubblewrap (the agent command sandbox)" >&2
    { apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1; }; } \
      || echo "install-tools: could not install bubblewrap; agent commands fall back to Landlock or rlimits" >&2
  else
    echo "install-tools: bubblewrap is missing and this is not root with apt: agent commands fall back to Landlock or rlimits (install the 'bubblewrap' package to sandbox them)" >&2
  fi
fi

need_go() {
  command -v go >/dev/null 2>&1 || { echo "install-tools: Go is required to build $1 (apt-get install golang, or see go.dev)" >&2; exit 1; }
}

if [ ! -x "$BIN/nats-server" ]; then
  if command -v nats-server >/dev/null 2>&1; then
    ln -sf "$(command -v nats-server)" "$BIN/nats-server"
  else
    need_go nats-server
    echo "install-tools: building nats-server $NATS_VERSION (go install)" >&2
    GOBIN="$BIN" go install "github.com/nats-io/nats-server/v2@$NATS_VERSION"
  fi
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: installing PostgreSQL (apt-get)" >&2
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    # Nexus starts its own cluster per data directory; Debian's default cluster is not used
    if command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters -h 2>/dev/null | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true; done
    fi
  else
    echo "install-tools: PostgreSQL is not installed (apt-get install postgresql); FerretDB will use SQLite" >&2
  fi
fi

# An older install built FerretDB without its PostgreSQL handler: build it again.
if [ -x "$BIN/ferretdb" ] && ! "$BIN/ferretdb" --help 2>/dev/null | grep -q -- "--postgresql-url"; then
  rm -f "$BIN/ferretdb"
fi

if [ ! -x "$BIN/ferretdb" ]; then
  need_go FerretDB
  echo "install-tools: building FerretDB $FERRETDB_VERSION (SQLite and PostgreSQL handlers)" >&2
  # `go install ferretdb@v1` fails here: the proxy refuses the module's version list (needed
  # for the deprecation check), and the module zip lacks build/version/version.txt. So we
  # download the module, write the version file the way `task gen-version` would, and build.
  src="$(GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  printf '%s\n' "$FERRETDB_VERSION" > "$work/build/version/version.txt"
  # built beside and renamed: a FerretDB that is running keeps its binary
  (cd "$work" && go build -trimpath -o "$BIN/ferretdb.new" ./cmd/ferretdb)
  mv -f "$BIN/ferretdb.new" "$BIN/ferretdb"
fi
echo "$BIN"
