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
# WORKERS=1 (the default here) handles connections in arrival order, as single-threaded brokers
# do: two v5 tests (request_response, subscribe_options) subscribe on one connection and publish
# on another a few microseconds later without waiting for SUBACK, which MQTT does not order.
# WORKERS=0 (one thread per core) runs them in parallel; see docs/CONFIG.md [runtime].

work=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/interop.toml" <<TOML
data_dir = "$work/data"
[listeners.tls]
enabled = false
[listeners.quic]
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
[historian]
enabled = false   # the broker alone is under test
[runtime]
worker_threads = ${WORKERS:-1}
[persistence]
sync = "os"
TOML

PROFILE="${PROFILE:-release}"
cargo build --locked --profile "$PROFILE" -p converge-broker --bin converge
bin_dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
LOG="${LOG:-$CARGO_TARGET_DIR/interop-server.log}"
"$CARGO_TARGET_DIR/$bin_dir/converge" serve --config "$work/interop.toml" > "$LOG" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

run_suite() {
  local module=$1
  (cd "$PAHO_DIR" && timeout 900 python3 - "$module" "$PORT" "${TESTS:-}" <<'PY'
import importlib, logging, sys, unittest
name, port, only = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mod = importlib.import_module(name)
# What each suite's __main__ sets up (its argv parsing cannot take our port).
base = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
wild = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
if name == "client_test5":
    mod.topic_prefix = "client_test5/"
    mod.topics = [mod.topic_prefix + t for t in base]
    mod.wildtopics = [mod.topic_prefix + t for t in wild]
else:
    mod.topics, mod.wildtopics = base, wild
mod.nosubscribe_topics = ("test/nosubscribe",)
mod.host, mod.port = "127.0.0.1", port
logging.getLogger().setLevel(logging.ERROR)
loader = unittest.TestLoader()
if only:
    suite = unittest.TestSuite(mod.Test(t) for t in only.split(",") if hasattr(mod.Test, t))
else:
    suite = loader.loadTestsFromTestCase(mod.Test)
result = unittest.TextTestRunner(verbosity=2).run(suite)
ran, bad = result.testsRun, len(result.failures) + len(result.errors)
print(f"{name}: {ran - bad} passed, {bad} failed")
sys.exit(0 if bad == 0 and ran > 0 else 1)
PY
  )
}

status=0
for suite in ${SUITES:-client_test client_test5}; do
  run_suite "$suite" || status=1
done
exit $status
