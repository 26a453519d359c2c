#!/usr/bin/env bash
# Runs Kiln with no configuration: the embedded default (SQLite, ./kiln-data, an in-process
# queue and a local node). Installs what is missing first. Flags pass through to the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "Checking system packages (FFmpeg 5.1 libraries, libvmaf, Vulkan loader…): deploy/setup-debian.sh"
deploy/setup-debian.sh

bin=target/release/kiln-control-plane
if [ -x "$bin" ]; then
  step "Building kiln-control-plane (release; only what changed since the last build)"
else
  step "First build of kiln-control-plane (release): it compiles every dependency, on the order of 15 minutes on 2 cores; later starts rebuild only what changed"
fi
started=$(date +%s)
cargo build --release -p kiln-control-plane
step "Built in $(( $(date +%s) - started )) s"

step "Starting Kiln: the embedded default (SQLite and files in ${KILN_DATA_DIR:-./kiln-data}, a local node). On the first start it prints an admin API key once, last."
exec "$bin" "$@"
