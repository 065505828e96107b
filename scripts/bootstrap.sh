#!/usr/bin/env bash
# Installs what a fresh Debian machine with only the Rust toolchain lacks to build Converge:
# libclang (the rocksdb crate's bindgen needs it) and a C++ compiler. Sourced by serve.sh and test.sh.
set -euo pipefail

missing=()
# Only libclang itself counts: libclang-cpp.so (pulled in by other packages) does not satisfy clang-sys.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if [ "${CONVERGE_WITH_MQTT_CLIENTS:-0}" = 1 ]; then
  command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Reuse one build directory outside the clone: RocksDB's C++ build is the long pole.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/converge-target}"
mkdir -p "$CARGO_TARGET_DIR"
