#!/usr/bin/env bash
# Runs Kiln with no configuration: the embedded default (SQLite, ./kiln-data, an in-process
# queue and a local node). Installs what is missing first. Flags pass through to the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-debian.sh
cargo build --release -p kiln-control-plane
exec target/release/kiln-control-plane "$@"
