#!/usr/bin/env bash
# End-to-end QoS 1 load over mutual TLS, same tool and same machine for every broker:
#   converge            plain broker (no policy, no historized topic)
#   converge+policy     the same load decided by a certificate policy (per-device profile, zone)
#   converge+historian  every message historized (plain decoder: one point each), durable before PUBACK
#   converge+json100    every message a JSON batch of 100 points, historized
#   mosquitto           Debian's Mosquitto 2 with require_certificate, in-memory (its default)
# Converge runs with persistence.sync = "fsync" (its default) and again with "os" where noted.
#
#   bash scripts/bench-ingest.sh              # CLIENTS=8 WINDOW=64 SECONDS=20
#
# Builds the release binaries first. Everything listens on 127.0.0.1 and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
command -v mosquitto >/dev/null 2>&1 || {
  echo "bench: installing mosquitto" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
}
if [ "${PROFILE:-release}" = release ]; then
  cargo build --release --locked --workspace --bins >&2
  bin="$CARGO_TARGET_DIR/release"
else # PROFILE=debug: a quick check of the script itself, not a measurement
  cargo test --locked --workspace --all-targets --no-run >&2
  bin="$CARGO_TARGET_DIR/debug"
fi
CLIENTS=${CLIENTS:-8}
WINDOW=${WINDOW:-64}
SECS=${SECONDS_PER_RUN:-20}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    ss -ltn | grep -q ":$1 " && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# What the server spent: CPU microseconds per acknowledged message (robust to other load on
# the machine, unlike messages/s) and its peak resident memory.
server_cost() { # label, pid, ticks at start, ingest_bench output
  local ticks acked hz
  hz=$(getconf CLK_TCK)
  ticks=$(( $(cpu_ticks "$2") - $3 ))
  acked=$(sed -n 's/.* acked=\([0-9]*\) .*/\1/p' <<<"$4")
  awk -v l="$1" -v t="$ticks" -v a="${acked:-0}" -v hz="$hz" -v rss="$(awk '/VmHWM/ {print $2}' "/proc/$2/status")" \
    'BEGIN { printf "%10s server: %.2f CPU-us per message, peak RSS %d kB\n", l, (a > 0 ? t / hz * 1e6 / a : 0), rss }'
}

# One PKI for all: the development PKI Converge makes on first start.
cat > "$work/base.toml" <<EOF
data_dir = "$work/data"
[listeners.tls]
bind = "127.0.0.1:18883"
[listeners.quic]
enabled = false
[metrics]
bind = "127.0.0.1:19464"
[historian.api]
bind = "127.0.0.1:18080"
[mqtt]
sys_interval_secs = 0
EOF
pki="$work/data/pki"

cat > "$work/policy.toml" <<'EOF'
version = 1
[[ca]]
id = "dev"
subject = "CN=Converge development CA"
[[zone]]
id = "plant"
security_level = 2
trusted_cas = ["dev"]
namespace = ["plant/#"]
[[zone]]
id = "scada"
security_level = 3
trusted_cas = ["dev"]
namespace = ["scada/#"]
[[conduit]]
id = "plant-to-scada"
from = "plant"
to = "scada"
topics = ["plant/+/+/telemetry/#"]
max_qos = 1
[[profile]]
id = "load"
issuers = ["dev"]
device = "cn"
zone = { fixed = "plant" }
publish = ["plant/load/${device}/telemetry/#"]
subscribe = ["plant/#"]
max_qos = 1
messages_per_second = 1000000
message_burst = 1000000
bytes_per_second = 1000000000
EOF

run_converge() { # label, extra TOML, ingest_bench args...
  local label=$1 extra=$2
  shift 2
  rm -rf "$work/data/db" "$work/data/audit"
  { cat "$work/base.toml"; printf '%b\n' "$extra"; } > "$work/c.toml"
  "$bin/converge" serve --config "$work/c.toml" > "$work/serve.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port 18883
  local t0 out
  t0=$(cpu_ticks "$pid")
  out=$("$bin/ingest_bench" --addr 127.0.0.1:18883 --ca "$pki/ca.pem" --ca-key "$pki/ca.key" \
    --clients "$CLIENTS" --window "$WINDOW" --seconds "$SECS" --label "$label" "$@")
  echo "$out"
  server_cost "$label" "$pid" "$t0" "$out"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

# First start makes the PKI; the CA's subject is what the policy trusts.
"$bin/converge" serve --config "$work/base.toml" > "$work/first.log" 2>&1 &
first=$!
pids+=("$first")
wait_port 18883
kill "$first"
wait "$first" 2>/dev/null || true
subject=$(openssl x509 -in "$pki/ca.pem" -noout -subject | sed "s/^subject=//")
[ -n "$subject" ] && sed -i "s|^subject = .*|subject = \"$subject\"|" "$work/policy.toml"

echo "# $(date -u +%Y-%m-%d) $(nproc) cores, $(uname -r); $CLIENTS clients, window $WINDOW, ${SECS}s each"
run_converge converge ""
run_converge conv+os '[persistence]\nsync = "os"'
run_converge +policy "[security]\npolicy_file = \"$work/policy.toml\""
run_converge +histor '[[historian.rules]]\nfilter = "plant/#"\ndecoder = "plain"'
run_converge +json100 '[[historian.rules]]\nfilter = "plant/#"\ndecoder = "json"' --batch 100
run_converge +sub "" --subscribe
run_converge +pol+sub "[security]\npolicy_file = \"$work/policy.toml\"" --subscribe

cat > "$work/mosquitto.conf" <<EOF
listener 18884 127.0.0.1
cafile $pki/ca.pem
certfile $pki/server.pem
keyfile $pki/server.key
require_certificate true
use_identity_as_username true
max_inflight_messages 64
max_queued_messages 10000
# The PKI keys are 0600 root: keep the privileges mosquitto would otherwise drop.
user root
EOF
for sub in "" "--subscribe"; do
  mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  mpid=$!
  pids+=("$mpid")
  wait_port 18884
  t0=$(cpu_ticks "$mpid")
  out=$("$bin/ingest_bench" --addr 127.0.0.1:18884 --ca "$pki/ca.pem" --ca-key "$pki/ca.key" \
    --clients "$CLIENTS" --window "$WINDOW" --seconds "$SECS" --label "mosq${sub:+ +sub}" $sub)
  echo "$out"
  server_cost "mosq${sub:+ +sub}" "$mpid" "$t0" "$out"
  kill "$mpid"
  wait "$mpid" 2>/dev/null || true
done
