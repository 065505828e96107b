#!/usr/bin/env bash
# Runs the Converge server on embedded defaults (./converge-data, development PKI on first start).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec cargo run --release --locked -p converge-broker --bin converge -- serve "$@"
