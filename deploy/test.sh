#!/usr/bin/env bash
# Runs every test: installs what is missing (FFmpeg, lavapipe, PostgreSQL), then the whole
# workspace's tests against real FFmpeg, real wgpu (lavapipe without a GPU), SQLite and the
# local PostgreSQL. Tests marked `#[ignore = "needs GPU"]` are compiled but run only with
# `cargo test -- --ignored` on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh --test

# A fresh Debian PostgreSQL answers on 127.0.0.1 with password auth: give the postgres role
# one when no URL was provided and the password-less connection is refused.
if [ -z "${KILN_TEST_POSTGRES_URL:-}" ]; then
  url="postgres://postgres@127.0.0.1:5432/postgres"
  if ! psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO -u postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 \
      || su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
    url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  fi
  export KILN_TEST_POSTGRES_URL="$url"
fi

# Lavapipe looks for a runtime dir; without one it prints noise (harmless) on every start.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --workspace --all-targets "$@"
