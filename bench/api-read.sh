#!/usr/bin/env bash
# Benchmark: authenticated reads vs the unauthenticated status route on one release server.
#
# Starts commissaire-server (release, embedded store) with its default httpbasicauth set-up
# (generated admin user, bcrypt cost 12),
# loads 1,000 hosts, then runs wrk (64 connections, 10 s, loopback only) against
#   GET /api/v0/host/{address}   (authenticated)
#   GET /api/v0/hosts            (authenticated, 1,000 hosts in the answer)
#   GET /api/v0/status           (no authentication; the reference)
# and prints requests/s, p99 latency and each rate as a ratio of the /status rate.
# Target: host read >= 0.5x the /status rate, p99 < 5 ms.
#
# The hosts get loopback addresses (127.77.x.y): each PUT queues an investigation, which must
# not send anything off the machine; nothing listens on port 22 there, so every investigation
# fails at once (connection refused) and the script waits for them all to end before measuring.
# The watcher is kept quiet (--watcher-interval 86400) so it does not re-probe them meanwhile.
# Environment: HOSTS (1000), DURATION (10s), CONNS (64), CARGO_TARGET_DIR
# (/var/tmp/commissaire-bench-target), SERVER_BIN (use this binary, no build), SETTLE_TIMEOUT
# (120 s).
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=${HOSTS:-1000}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-120}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/commissaire-bench-target}
((HOSTS >= 1 && HOSTS <= 62500)) || { echo "bench/api-read.sh: HOSTS must be 1..62500" >&2; exit 1; }

command -v wrk >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
}
if [ -n "${SERVER_BIN:-}" ]; then
  bin=$SERVER_BIN # a binary built elsewhere: no build
else
  nice -n 10 cargo build --release -q -p commissaire-server
  bin=$CARGO_TARGET_DIR/release/commissaire-server
fi
[ -x "$bin" ] || { echo "bench/api-read.sh: $bin is not an executable" >&2; exit 1; }

work=$(mktemp -d /tmp/commissaire-bench-api-read.XXXXXX)
pid=""
cleanup() {
  set +e # a failing command here must not turn the script's exit status into 1
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$work"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# No plugin configured: the server creates users.json (user admin, bcrypt cost 12) and prints
# the password once; that is the httpbasicauth set-up being measured.
"$bin" --no-config-file --data-dir "$work/data" -i 127.0.0.1 -p "$port" --logging warn \
  --watcher-interval 86400 > "$work/server.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$base/api/v0/status" >/dev/null && break; sleep 0.1; done
curl -sf "$base/api/v0/status" >/dev/null || { echo "server did not start:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
user=admin
pass=$(grep -A2 'password:' "$work/server.log" | tail -1 | tr -d ' ')
[ -n "$pass" ] || { echo "no admin password printed" >&2; cat "$work/server.log" >&2; exit 1; }

ssh-keygen -q -t ed25519 -N '' -f "$work/key" >/dev/null
key=$(base64 -w0 "$work/key")
printf '{"ssh_priv_key": "%s"}' "$key" > "$work/body.json"
echo "loading $HOSTS hosts..."
t_auth=$(date +%s.%N) # the first authenticated requests: bcrypt, then cached for 60 s (auth::CACHE_TTL)
# 127.77.x.y: loopback, so the investigations these PUTs queue never leave the machine.
seq 0 $((HOSTS - 1)) | xargs -P 8 -I{} sh -c \
  'i={}; curl -sf -o /dev/null -u '"$user:$pass"' -X PUT --data-binary @'"$work/body.json"' '"$base"'/api/v0/host/127.77.$((i / 250)).$((i % 250 + 1))' || true
count=$(curl -sf -u "$user:$pass" "$base/api/v0/hosts" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "hosts stored: $count"
[ "$count" -eq "$HOSTS" ] || { echo "expected $HOSTS hosts" >&2; tail -20 "$work/server.log" >&2; exit 1; }
# Wait until no investigation is left (they fail at once: nothing listens on 127.77.x.y:22).
summary=""
for _ in $(seq 1 $((SETTLE_TIMEOUT * 2))); do
  summary=$(curl -sf -u "$user:$pass" "$base/api/v0/hosts" | python3 -c '
import collections, json, sys
c = collections.Counter(h.get("status") for h in json.load(sys.stdin))
print(" ".join(f"{k}={v}" for k, v in sorted(c.items())))') || summary="unanswered"
  case " $summary " in *" investigating="* | *" bootstrapping="* | " unanswered ") sleep 0.5 ;; *) break ;; esac
done
echo "host states before measuring: $summary"
case " $summary " in *" investigating="* | *" bootstrapping="* | " unanswered ") echo "investigations did not settle within ${SETTLE_TIMEOUT}s" >&2; exit 1 ;; esac

auth="Authorization: Basic $(printf '%s:%s' "$user" "$pass" | base64 -w0)"
# --timeout 30s: a request stalled for seconds is counted in the latencies (wrk's default 2 s
# timeout would drop it from them and only count a socket error).
run() { # name url [header]
  local out t0
  t0=$(python3 -c "import time; print(f'{time.time() - $t_auth:.0f}')")
  if [ -n "${3:-}" ]; then
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 30s --latency -H "$3" "$2")
  else
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 30s --latency "$2")
  fi
  local rps p99 max errs serr
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  max=$(awk '$1=="Latency" && NF >= 4 {print $4; exit}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  serr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
  echo "$1 $rps $p99 ${max:-0us} ${errs:-0} ${serr:-0} $t0"
}
status=$(run status "$base/api/v0/status")
host=$(run host "$base/api/v0/host/127.77.1.7" "$auth")
hosts=$(run hosts "$base/api/v0/hosts" "$auth")

python3 - "$CONNS" "$status" "$host" "$hosts" <<'PY'
import sys
conns = int(sys.argv[1])
rows = [a.split() for a in sys.argv[2:]]
ref = float(rows[0][1])
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if v.endswith(unit): return float(v[:-len(unit)]) * f
    return float(v)
print(f"{'route':<31}{'req/s':>9}{'p99':>11}{'max':>11}{'x /status':>10}{'non-2xx':>8}{'sock err':>9}{'at':>6}")
names = {"status": "GET /api/v0/status (no auth)", "host": "GET /api/v0/host/{a} (basic)", "hosts": "GET /api/v0/hosts (basic)"}
for name, rps, p99, mx, errs, serr, at in rows:
    print(f"{names[name]:<31}{float(rps):>9.0f}{ms(p99):>9.2f}ms{ms(mx):>9.1f}ms{float(rps)/ref:>10.2f}{errs:>8}{serr:>9}{at + 's':>6}")
print(f"(at: start of the run, seconds after the first authenticated request; verified credentials are "
      f"remembered until 60 s after their last use)")
print(f"({conns} connections, closed loop: mean latency = {conns} / rate, e.g. {conns / ref * 1000:.2f} ms at the "
      f"/status rate; a p99 under 5 ms needs well over {conns / 5e-3:.0f} req/s)")
host = rows[1]
ok = float(host[1]) / ref >= 0.5 and ms(host[2]) < 5.0
bad = [names[r[0]] for r in rows if r[4] != "0" or r[5] != "0"]
if bad:
    print("NOTE: non-2xx answers or socket errors on", ", ".join(bad), "- those figures do not count")
    ok = False
print("target (host read >= 0.5x status, p99 < 5 ms):", "MET" if ok else "NOT MET")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
