#!/usr/bin/env bash
# Fuzz: schemathesis against the server's own OpenAPI document, counting 5xx answers.
#
# Starts commissaire-server (dev build unless SERVER_BIN is given) on the embedded store with
# its default authentication (generated admin user) and a quiet watcher, inside a private
# network namespace that has only loopback, so that hosts the fuzzer registers can never be
# contacted off the machine. Runs schemathesis (installed into a virtualenv with pip when
# missing) on /api/v0/openapi.json with the `not_a_server_error` check and EXAMPLES cases per
# operation, then reads the server's /metrics: requests per status class (the server's own
# count, independent of what schemathesis reports) and exits 1 if any answer was a 5xx.
# Environment: EXAMPLES (50 per operation; ~40 operations), SEED (1), PORT (18000), VENV
# (/var/tmp/commissaire-fuzz-venv), CARGO_TARGET_DIR, SERVER_BIN. Needs root (unshare -n).
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=${EXAMPLES:-50}
SEED=${SEED:-1}
PORT=${PORT:-18000}
VENV=${VENV:-/var/tmp/commissaire-fuzz-venv}

if [ -z "${FUZZ_IN_NETNS:-}" ]; then
  # Outside the namespace: tools first (pip needs the network), then re-run inside it.
  if [ ! -x "$VENV/bin/schemathesis" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q schemathesis
  fi
  if [ -z "${SERVER_BIN:-}" ]; then
    nice -n 10 cargo build -q -p commissaire-server
    SERVER_BIN=${CARGO_TARGET_DIR:-target}/debug/commissaire-server
  fi
  [ -x "$SERVER_BIN" ] || { echo "bench/fuzz-openapi.sh: $SERVER_BIN is not an executable" >&2; exit 1; }
  exec unshare --net env FUZZ_IN_NETNS=1 SERVER_BIN="$(realpath "$SERVER_BIN")" "$0" "$@"
fi

ip link set lo up
work=$(mktemp -d /tmp/commissaire-fuzz.XXXXXX)
"$SERVER_BIN" --no-config-file --data-dir "$work/data" -i 127.0.0.1 -p "$PORT" \
  --watcher-interval 86400 >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
base=http://127.0.0.1:$PORT
for _ in $(seq 1 120); do
  curl -fsS "$base/api/v0/status" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$base/api/v0/status" >/dev/null || { cat "$work/server.log"; exit 1; }
password=$(awk '/password:/{getline; getline; print $1; exit}' "$work/server.log")
[ -n "$password" ] || { echo "no generated password in the server log" >&2; exit 1; }

set +e
# From the scratch directory: schemathesis keeps a cache in its working directory.
cd "$work"
"$VENV/bin/schemathesis" run "$base/api/v0/openapi.json" \
  --auth "admin:$password" \
  --checks not_a_server_error \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --request-timeout 30 \
  --generation-database none \
  --no-color 2>&1 | tee "$work/schemathesis.log" | tail -25
st=${PIPESTATUS[0]}
set -e

metrics=$(curl -fsS "$base/metrics")
count() {
  echo "$metrics" | awk -v c="$1" '/^http_requests_total\{/ && $0 ~ "status=\""c"\"" {s+=$NF} END {printf "%d", s}'
}
total=0
for c in 2xx 3xx 4xx 5xx; do
  n=$(count "$c"); total=$((total + n)); printf '%s: %s\n' "$c" "$n"
done
fivexx=$(count 5xx)
echo "requests answered: $total, 5xx: $fivexx (schemathesis exit status $st; log in $work)"
[ "$fivexx" -eq 0 ]
