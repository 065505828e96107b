#!/usr/bin/env bash
# TLS vs QUIC on an impaired link, side by side in one run (docs/BENCHMARKS.md).
#
# Two network namespaces joined by a veth pair: the server runs in cv-srv (10.77.0.1), the
# load tool in cv-cli (10.77.0.2). Random loss comes from an nftables rule in each namespace's
# output chain (`numgen random mod 100 < LOSS drop`), so both directions lose packets. The
# host's own interfaces are never touched; everything is removed on exit. Needs root, `ip`
# and `nft` (Debian's nftables; installed when missing).
#
#   sudo bash scripts/bench-transport.sh            # LOSSES="0 1 5" DEVICES=2000 SECONDS=20 STORMS=1
# UDP_RECV_BUFFER=bytes sets listeners.quic.udp_recv_buffer_bytes (the kernel caps it at
# net.core.rmem_max, which this script does not change).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

LOSSES=${LOSSES-"0 1 5"}  # LOSSES="" skips to the storm
DEVICES=${DEVICES:-2000}
SECS=${SECONDS_PER_RUN:-20}
TOPICS=${TOPICS:-8}
RATE=${RATE:-50}
SAMPLES=${SAMPLES:-200}

if ! command -v nft >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables >/dev/null
fi
# The workspace's binaries, as bench-ingest.sh builds them: `-p` would resolve features
# differently and rebuild RocksDB.
cargo build --locked --release --workspace --bins
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
cleanup() {
  kill "${server_pid:-0}" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del cv-srv 2>/dev/null || true
  ip netns del cv-cli 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Namespaces left by an interrupted run (their veth pair goes with them).
ip netns del cv-srv 2>/dev/null || true
ip netns del cv-cli 2>/dev/null || true
ip netns add cv-srv
ip netns add cv-cli
ip link add cv-veth-s type veth peer name cv-veth-c
ip link set cv-veth-s netns cv-srv
ip link set cv-veth-c netns cv-cli
ip -n cv-srv addr add 10.77.0.1/24 dev cv-veth-s
ip -n cv-cli addr add 10.77.0.2/24 dev cv-veth-c
for ns in cv-srv cv-cli; do
  ip -n $ns link set lo up
  ip netns exec $ns nft add table inet impair
  ip netns exec $ns nft add chain inet impair out '{ type filter hook output priority 0; }'
done
ip -n cv-srv link set cv-veth-s up
ip -n cv-cli link set cv-veth-c up

cat > "$work/bench.toml" <<TOML
data_dir = "$work/data"
[listeners.tls]
bind = "10.77.0.1:8883"
require_client_id_match = false   # every bench client uses demo-device's certificate
[listeners.quic]
bind = "10.77.0.1:14567"
udp_recv_buffer_bytes = ${UDP_RECV_BUFFER:-33554432}   # the default
[limits]
max_connections = 20000
[metrics]
enabled = false
[historian]
enabled = false   # the broker alone is under test
[mqtt]
sys_interval_secs = 0
[persistence]
sync = "os"
TOML

ulimit -n "$(ulimit -Hn)"  # 2,000 devices need as many sockets
ip netns exec cv-srv "$bin/converge" serve --config "$work/bench.toml" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  ip netns exec cv-srv ss -ltn | grep -q 10.77.0.1:8883 && break
  sleep 0.1
done
pki="$work/data/pki"
run() {
  ip netns exec cv-cli "$bin/transport_bench" "$@" --tls 10.77.0.1:8883 --quic 10.77.0.1:14567 \
    --ca "$pki/ca.pem" --cert "$pki/devices/demo-device.pem" --key "$pki/devices/demo-device.key"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); topics=$TOPICS rate=$RATE/s each, $SECS s"
for loss in $LOSSES; do
  for ns in cv-srv cv-cli; do
    ip netns exec $ns nft flush chain inet impair out
    if [ "$loss" != 0 ]; then
      ip netns exec $ns nft add rule inet impair out numgen random mod 100 '<' "$loss" drop
    fi
  done
  run connect --samples "$SAMPLES" --label "loss=$loss%"
  run latency --topics "$TOPICS" --rate "$RATE" --seconds "$SECS" --label "loss=$loss%"
done
for ns in cv-srv cv-cli; do ip netns exec $ns nft flush chain inet impair out; done
udp_drops() { ip netns exec cv-srv nstat -az UdpRcvbufErrors | awk '/UdpRcvbufErrors/ {print $2}'; }
for round in $(seq 1 "${STORMS:-1}"); do
  before=$(udp_drops)
  run storm --devices "$DEVICES" --label "loss=0% round=$round"
  # Datagrams the kernel dropped because the server's UDP receive buffer was full: the QUIC
  # storm's tail (each dropped Initial waits out a doubling retransmission timeout).
  echo " server UDP receive-buffer drops during this storm: $(( $(udp_drops) - before ))"
done
