#!/usr/bin/env bash
# Scale-out test (CI): 3 `sift serve` replicas behind Debian's haproxy (TCP mode, health-checked
# with Sift's own Health call). `sift load` drives them through haproxy; one replica is stopped
# (SIGTERM: drain) mid-run; the run must finish with no failed call. Then client-side affinity
# routing and round robin are run against the replicas directly and their prefix-cache hit
# ratios reported (10 queries, a number prime to the 3 replicas, so round robin does not happen
# to send every repeat of a query to the same replica).
set -euo pipefail
cd "$(dirname "$0")/.."
sift=${SIFT_BIN:-.build/debug/sift}
model=${SIFT_TINY_MODEL:-../shared/fixtures/tiny-qwen3}
command -v haproxy >/dev/null || { echo "haproxy is not installed (apt-get install -y haproxy)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

. scripts/lib/sift-server.sh
start_replicas() {  # start_replicas PREFIX-CACHE-MB → ports in $ports, pids in $replica_pids
  ports=(); replica_pids=()
  for i in 1 2 3; do
    start_sift_server "$work/r$i.log" --model "$model" --threads 1 --prefix-cache-mb "$1" --drain-timeout 30
    replica_pids+=("$server_pid"); pids+=("$server_pid"); ports+=("$server_port")
  done
}

echo "== failover through haproxy =="
start_replicas 64
front=$((20000 + RANDOM % 20000))
# Health check: a Sift Health call (request id 1); SERVING is field 1 = 1 inside health_response (field 18).
cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  retries 3
  option redispatch
frontend sift
  bind 127.0.0.1:$front
  default_backend replicas
backend replicas
  balance leastconn
  option tcp-check
  tcp-check connect
  tcp-check send-binary 0000000508018a0100
  tcp-check expect rbinary 9201..0801
  default-server inter 300ms fall 2 rise 2
  server r1 127.0.0.1:${ports[0]} check
  server r2 127.0.0.1:${ports[1]} check
  server r3 127.0.0.1:${ports[2]} check
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 1.5
"$sift" load --server "127.0.0.1:$front" --concurrency 6 --documents 6 --duration 20 --json >"$work/load.json" &
load=$!
sleep 6
echo "stopping replica r2 (SIGTERM: drain) while the load runs"
kill -TERM "${replica_pids[1]}"
wait "${replica_pids[1]}" && echo "r2 drained and exited 0"
wait $load || true
cat "$work/load.json"
python3 - "$work/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] > 0, "no call succeeded"
assert r["failed"] == 0, f"calls were lost: {r['errors']}"
print(f"failover: {r['ok']} calls, none failed, p99 {r['latency_ms']['p99']:.0f} ms")
PY
for p in "${replica_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait "${replica_pids[@]}" 2>/dev/null || true

echo "== affinity vs round robin: prefix cache hit ratio =="
for routing in affinity round-robin; do
  start_replicas 64
  "$sift" load --server "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" --routing $routing \
    --distinct-queries 10 --documents 2 --concurrency 1 --requests 60 --duration 300 --json >"$work/$routing.json"
  for p in "${replica_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${replica_pids[@]}" 2>/dev/null || true
done
python3 - "$work/affinity.json" "$work/round-robin.json" <<'PY'
import json, sys
a, r = (json.load(open(p)) for p in sys.argv[1:])
assert a["failed"] == 0 and r["failed"] == 0
print(f"prefix cache hit ratio: affinity {a['prefix_cache_hit_ratio']:.3f}, round robin {r['prefix_cache_hit_ratio']:.3f}")
assert a["prefix_cache_hit_ratio"] > r["prefix_cache_hit_ratio"], "affinity should keep more prefixes cached"
PY
