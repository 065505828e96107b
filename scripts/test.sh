#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit, integration and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONVERGE_WITH_MQTT_CLIENTS=1
source scripts/bootstrap.sh
cargo test --locked --workspace --all-targets "$@"
