#!/usr/bin/env bash
# Benchmark: the watcher of the scaled-out shape, one `commissaire-service watcher` process
# against two on the same hosts: CPU per host check (the two must be no worse than one), and
# how the hosts are split.  Not a test.  See bench/README.md.
#
# Starts a real etcd and a testbed of HOSTS (300) sshd hosts, registers them through a
# commissaire-server on that etcd (in-process workers, until every host is `disassociated`),
# stops the server, then runs:
# PAIRS (4) pairs of phases, in the order 1 2, 2 1, 1 2, ...: a phase runs one watcher service,
# or two at once, for WARMUP (2) + ROUNDS (5) rounds of INTERVAL (10) s.
# For each phase it reads the processes' CPU time and their commissaire_watcher_checks_total
# (/metrics) after the warm-up rounds (first contact opens the SSH sessions) and at the end.
# CPU time comes from a CPU-accounting control group holding the phase's processes (in
# nanoseconds on cgroup v1, microseconds on v2, every thread included, even those that have
# exited); where no control group can be made, from /proc/PID/stat, which counts in clock ticks
# (10 ms: ~3 % of what one process spends in a window of 5 rounds).  With `perf` (PERF=1 when
# it is installed) it also counts their context switches and system calls in between.  It
# prints each phase's checks, CPU seconds, CPU per check, system calls and context switches per
# check, and the ratio two/one per pair and over all phases.  No Redis is needed: the watcher is driven by its rounds, not by jobs.
#
# Needs root (network namespaces).  Network: loopback and the testbed's own addresses only.
# Every wait is bounded; the trap stops every process it started (by PID) and removes the
# testbed.
#
# Environment: HOSTS (300), INTERVAL (10), WARMUP (2), ROUNDS (5), PAIRS (4), PERF (1 when
# `perf` is installed, else 0), REGISTER_TIMEOUT (900 s),
# TESTBED_STATE (/tmp/commissaire-bench-watcher), TESTBED_PREFIX (bw), TESTBED_NET (252),
# CARGO_TARGET_DIR (/var/tmp/commissaire-bench-target), BIN_DIR (use the binaries there
# instead of building), THREADS (1: the watcher processes' TOKIO_WORKER_THREADS, the same in
# both phases; empty for the runtime's default, one per core), CPUS (where the watchers run:
# see below).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
[ "$(id -u)" -eq 0 ] || { echo "bench/watcher-scaled.sh: needs root (network namespaces)" >&2; exit 1; }

HOSTS=${HOSTS:-300}
INTERVAL=${INTERVAL:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-5}
REGISTER_TIMEOUT=${REGISTER_TIMEOUT:-900}
THREADS=${THREADS-1}
[[ -z $THREADS || ( $THREADS =~ ^[0-9]+$ && $THREADS -ge 1 ) ]] || { echo "bench/watcher-scaled.sh: THREADS must be empty or a whole number >= 1" >&2; exit 1; }
# CPUS: CPU lists (taskset -c) the watcher processes are confined to, separated by spaces: the
# i-th process of a phase gets the i-th list (the lists repeat when there are fewer), so "1"
# puts every process on CPU 1 and "0 1" gives each of two processes a CPU of its own (the
# single process gets CPU 0).  Empty (the default) lets the scheduler place them, as it would
# in production.  bench/README.md has what each placement measured.
CPUS=${CPUS:-}
read -r -a cpu_lists <<<"$CPUS"
for c in "${cpu_lists[@]}"; do
  [[ $c =~ ^[0-9]+([,-][0-9]+)*$ ]] || { echo "bench/watcher-scaled.sh: CPUS must be CPU lists such as \"1\" or \"0 1\"" >&2; exit 1; }
done
if ((${#cpu_lists[@]})); then
  command -v taskset >/dev/null || { echo "bench/watcher-scaled.sh: CPUS needs taskset (util-linux)" >&2; exit 1; }
fi
if [ -n "$THREADS" ]; then threads_env=("TOKIO_WORKER_THREADS=$THREADS"); else threads_env=(-u TOKIO_WORKER_THREADS); fi
export TESTBED_STATE=${TESTBED_STATE:-/tmp/commissaire-bench-watcher}
export TESTBED_PREFIX=${TESTBED_PREFIX:-bw}
export TESTBED_NET=${TESTBED_NET:-252}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/commissaire-bench-target}
testbed=$repo/testbed/testbed.sh
PAIRS=${PAIRS:-4}
if command -v perf >/dev/null; then PERF=${PERF:-1}; else PERF=0; fi
[[ $PERF == 0 || $PERF == 1 ]] || { echo "bench/watcher-scaled.sh: PERF must be 0 or 1" >&2; exit 1; }
for v in HOSTS INTERVAL WARMUP ROUNDS PAIRS REGISTER_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} >= 1)) || { echo "bench/watcher-scaled.sh: $v must be a whole number >= 1" >&2; exit 1; }
done
for t in etcd curl python3; do
  command -v "$t" >/dev/null || { echo "bench/watcher-scaled.sh: $t is missing" >&2; exit 1; }
done
log() { echo "[$(date +%T)] $*" >&2; }

if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
else
  log "building (release, nice 10) in $CARGO_TARGET_DIR"
  nice -n 10 cargo build --release -q -p commissaire-server --bins
  bin=$CARGO_TARGET_DIR/release
fi

work=$(mktemp -d /tmp/commissaire-bench-watcher.XXXXXX)
pids=()
cleanup() {
  set +e
  # Phases run in subshells: their processes are listed in a file, not in `pids`.
  [ -f "$work/phase-pids" ] && pids+=($(cat "$work/phase-pids"))
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "$testbed" down --purge >/dev/null 2>&1
  # Removable once its processes are gone (killed ones may take a moment to exit).
  if [ -f "$work/cgroup" ]; then
    for _ in $(seq 1 25); do rmdir "$(cat "$work/cgroup")" 2>/dev/null && break; sleep 0.2; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A control group for the phases' CPU accounting (see above); empty when none can be made.
cg_dir=""; cg_usage=""
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cg_dir=/sys/fs/cgroup/commissaire-bench-$$; cg_usage=$cg_dir/cpu.stat
elif [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
  cg_dir=/sys/fs/cgroup/cpuacct/commissaire-bench-$$; cg_usage=$cg_dir/cpuacct.usage
fi
if [ -n "$cg_dir" ] && ! mkdir "$cg_dir" 2>/dev/null; then cg_dir=""; cg_usage=""; fi
if [ -n "$cg_dir" ]; then
  echo "$cg_dir" >"$work/cgroup"
  log "CPU time from the control group $cg_dir"
else
  log "no control group for CPU accounting: CPU time from /proc/PID/stat (10 ms ticks)"
fi
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null && break; sleep 0.2; done
store="etcd:server_url=http://127.0.0.1:$etcd_port"

log "testbed: $HOSTS hosts; watchers on CPUs ${CPUS:-chosen by the scheduler}"
"$testbed" up "$HOSTS" --owner $$ --ttl 7200 >&2
key_b64=$(base64 -w0 "$TESTBED_STATE/id_ed25519")

"$bin/commissaire-server" --insecure-no-auth --listen-port "$api_port" --data-dir "$work/server" \
  --storage-handler "$store" --watcher-interval 86400 >"$work/server.log" 2>&1 &
server_pid=$!; pids+=($server_pid)
api=http://127.0.0.1:$api_port/api/v0
for _ in $(seq 1 100); do curl -sf "$api/status" >/dev/null && break; sleep 0.2; done
log "registering $HOSTS hosts"
cut -f2 "$TESTBED_STATE/hosts.tsv" | while read -r a; do
  curl -sf -X PUT "$api/host/$a" -d "{\"ssh_priv_key\": \"$key_b64\"}" >/dev/null
done
deadline=$((SECONDS + REGISTER_TIMEOUT))
while :; do
  n=$(curl -sf "$api/hosts" | python3 -c 'import json,sys; print(sum(h["status"]=="disassociated" for h in json.load(sys.stdin)))')
  [ "$n" -ge "$HOSTS" ] && break
  ((SECONDS < deadline)) || { echo "bench/watcher-scaled.sh: only $n of $HOSTS hosts registered" >&2; exit 1; }
  sleep 1
done
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
# The server's lease (and its watcher registration) must be gone before the phases start.
sleep 12

phase() {  # phase N: run N watcher services; prints "checks cpu_seconds shares ctxsw syscalls"
  local n=$1 ports=() ppids=()
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port)
    local pin=()
    if ((${#cpu_lists[@]})); then pin=(taskset -c "${cpu_lists[$(((i - 1) % ${#cpu_lists[@]}))]}"); fi
    "${pin[@]}" env "${threads_env[@]}" "$bin/commissaire-service" watcher --storage-handler "$store" \
      --secrets-key-file "$work/server/secrets.key" --worker-id "w$n-$i-$RANDOM" \
      --watcher-interval "$INTERVAL" --metrics-listen "127.0.0.1:$port" >>"$work/w$n-$i.log" 2>&1 &
    ppids+=($!); echo $! >>"$work/phase-pids"; ports+=("$port")
    if [ -n "$cg_dir" ]; then echo $! >"$cg_dir/cgroup.procs"; fi
  done
  sleep $((INTERVAL * WARMUP))
  local before after perf_pid="" counts="- -"
  before=$(python3 "$work/sample.py" "${ppids[*]}" "${ports[*]}" "$cg_usage")
  if [ "$PERF" = 1 ]; then
    # Context switches and system calls of every thread of the processes, over the window.
    timeout -s INT $((INTERVAL * ROUNDS)) perf stat -x, -e context-switches,raw_syscalls:sys_enter \
      -p "$(IFS=,; echo "${ppids[*]}")" -o "$work/perf.csv" >/dev/null 2>&1 &
    perf_pid=$!; echo $! >>"$work/phase-pids"
  fi
  sleep $((INTERVAL * ROUNDS))
  after=$(python3 "$work/sample.py" "${ppids[*]}" "${ports[*]}" "$cg_usage")
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" 2>/dev/null || true
    counts=$(python3 - "$work/perf.csv" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        v[f[2]] = f[0]
print(v.get("context-switches", "-"), v.get("raw_syscalls:sys_enter", "-"))
PY
)
  fi
  for p in "${ppids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  sleep 5  # leases revoked on a clean stop; let the registrations vanish
  python3 - "$before" "$after" "$counts" <<'PY'
import sys
b = sys.argv[1].split()
a = sys.argv[2].split()
shares = "/".join(str(int(x) - int(y)) for x, y in zip(a[2].split("/"), b[2].split("/")))
print(f"{float(a[0]) - float(b[0]):.0f} {float(a[1]) - float(b[1]):.3f} {shares} {sys.argv[3]}")
PY
}
cat >"$work/sample.py" <<'PY'
import sys, urllib.request, os
pids = sys.argv[1].split(); ports = sys.argv[2].split(); usage = sys.argv[3]
hz = os.sysconf("SC_CLK_TCK")
checks = cpu = 0.0
shares = []
if usage.endswith("cpu.stat"):  # cgroup v2: usage_usec
    cpu = next(int(l.split()[1]) for l in open(usage) if l.startswith("usage_usec ")) / 1e6
elif usage:  # cgroup v1 cpuacct: nanoseconds
    cpu = int(open(usage).read()) / 1e9
for pid, port in zip(pids, ports):
    if not usage:
        stat = open(f"/proc/{pid}/stat").read()
        f = stat[stat.rfind(")") + 2:].split()
        cpu += (int(f[11]) + int(f[12])) / hz
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    c = next((float(l.split()[-1]) for l in text.splitlines() if l.startswith("commissaire_watcher_checks_total")), 0.0)
    checks += c
    shares.append(str(int(c)))
print(checks, cpu, "/".join(shares))
PY

# Phases alternate 1 2 2 1 1 2 ...: a drift of the machine over the run (other load, the
# store growing) then weighs on both shapes alike instead of on whichever runs last.
: >"$work/results"
for p in $(seq 1 "$PAIRS"); do
  if ((p % 2)); then order="1 2"; else order="2 1"; fi
  for n in $order; do
    log "pair $p: $n watcher(s), $ROUNDS rounds of $INTERVAL s after $WARMUP warm-up rounds"
    echo "$p $n $(phase "$n")" >>"$work/results"
  done
done
python3 - "$work/results" "$HOSTS" "$ROUNDS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
hosts, rounds = sys.argv[2], sys.argv[3]
print(f"hosts {hosts}, {rounds} rounds measured per phase, {len(rows) // 2} pairs")
print("pair  watchers  checks (split)        CPU s   ms CPU/check  syscalls/check  ctx switches/check")
per = {}
tot = {"1": [0.0, 0.0], "2": [0.0, 0.0]}
for pair, n, checks, cpu, split, ctx, sysc in rows:
    c, u = float(checks), float(cpu)
    ms = u / c * 1000 if c else float("nan")
    sc = f"{float(sysc) / c:.1f}" if sysc != "-" and c else "-"
    cs = f"{float(ctx) / c:.1f}" if ctx != "-" and c else "-"
    print(f"{pair:>4}  {n:>8}  {checks:>6} ({split:<11})  {u:6.2f}  {ms:11.3f}  {sc:>14}  {cs:>18}")
    per.setdefault(pair, {})[n] = ms
    tot[n][0] += c
    tot[n][1] += u
ratios = [v["2"] / v["1"] for v in per.values() if "1" in v and "2" in v]
one = tot["1"][1] / tot["1"][0] * 1000
two = tot["2"][1] / tot["2"][0] * 1000
print(f"all phases: one watcher {one:.3f} ms CPU per check, two watchers {two:.3f} ms")
print("ratio two/one per pair: " + ", ".join(f"{r:.2f}" for r in ratios))
spread = (f" (standard deviation {statistics.stdev(ratios):.2f}, standard error "
          f"{statistics.stdev(ratios) / len(ratios) ** 0.5:.2f})") if len(ratios) > 1 else ""
print(f"ratio two/one, all phases: {two / one:.2f}; mean of the pairs {statistics.mean(ratios):.2f}{spread} (target <= 1.00 within noise)")
PY
