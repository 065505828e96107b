#!/usr/bin/env bash
# Runs the Eclipse Paho MQTT interoperability suites (3.1.1: client_test.py, 5: client_test5.py)
# against a Converge server on a loopback plain listener.
#
# The suites are not ours and are not committed: bring eclipse/paho.mqtt.testing onto the machine
# and put its `interoperability/` folder under third_party/paho/ (git-ignored), or point
# PAHO_DIR at it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
PAHO_DIR="${PAHO_DIR:-third_party/paho/interoperability}"
[ -f "$PAHO_DIR/client_test5.py" ] || { echo "no Paho suites in $PAHO_DIR" >&2; exit 2; }
PORT="${PORT:-18830}"

work=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/interop.toml" <<TOML
data_dir = "$work/data"
[listeners.tls]
enabled = false
[listeners.tcp]
enabled = true
bind = "127.0.0.1:$PORT"
allow_anonymous = true
deny_subscribe = ["test/nosubscribe"]
[limits]
receive_maximum = 20
[mqtt]
max_keep_alive_secs = 60
[metrics]
enabled = false
[persistence]
sync = "os"
TOML

cargo build --locked -p converge-broker --bin converge
"$CARGO_TARGET_DIR/debug/converge" serve --config "$work/interop.toml" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

run_suite() {
  local module=$1
  (cd "$PAHO_DIR" && timeout 600 python3 - "$module" "$PORT" <<'PY'
import importlib, sys, unittest
name, port = sys.argv[1], int(sys.argv[2])
mod = importlib.import_module(name)
mod.host, mod.port = "127.0.0.1", port
if hasattr(mod, "setData"):
    mod.setData()
suite = unittest.TestLoader().loadTestsFromTestCase(mod.Test)
result = unittest.TextTestRunner(verbosity=2).run(suite)
ran, bad = result.testsRun, len(result.failures) + len(result.errors)
print(f"{name}: {ran - bad} passed, {bad} failed")
sys.exit(0 if bad == 0 else 1)
PY
  )
}

status=0
run_suite client_test || status=1
run_suite client_test5 || status=1
exit $status
