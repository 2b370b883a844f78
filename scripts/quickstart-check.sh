#!/usr/bin/env bash
# Runs the README's quickstart verbatim against a fresh server and a fresh testbed, and checks
# that it ends as the README says: cluster `prod` reads `ok` and its restart `finished`.
#
#   scripts/quickstart-check.sh [--release] [--bin-dir DIR]
#
# The blocks run are the README's code blocks fenced as ```sh quickstart, in order, as one
# bash script (set -euo pipefail) from the repository's root. Without --bin-dir, commctl and
# commissaire-server are built first (cargo build [--release], $CARGO_TARGET_DIR honoured).
# Needs root (the testbed) and curl.
#
# Isolation: the server listens on a free loopback port with its data in a temporary directory;
# commctl's ~/.commissaire.json goes to a temporary HOME; the testbed takes a free slot under
# /tmp/commissaire-testbed/ (the same locks the Rust test handle uses), so it never touches
# another instance. Only loopback and the testbed's own addresses are contacted. Everything is
# bounded (QUICKSTART_TIMEOUT seconds for the blocks, default 900) and everything started here
# is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

fail() { echo "quickstart-check: $*" >&2; exit 1; }

BIN_DIR=""
PROFILE=debug
while (($#)); do
    case $1 in
    --bin-dir) BIN_DIR=${2:?--bin-dir DIR}; shift 2 ;;
    --release) PROFILE=release; shift ;;
    *) fail "unknown argument $1 (usage: scripts/quickstart-check.sh [--release] [--bin-dir DIR])" ;;
    esac
done
[[ $(id -u) == 0 ]] || fail "must run as root (the testbed creates network namespaces)"
command -v curl > /dev/null || fail "curl not found (apt-get install curl)"
command -v flock > /dev/null || fail "flock not found (apt-get install util-linux)"
TIMEOUT=${QUICKSTART_TIMEOUT:-900}
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "QUICKSTART_TIMEOUT: seconds"

if [[ -z $BIN_DIR ]]; then
    release=()
    [[ $PROFILE == release ]] && release=(--release)
    cargo build --quiet "${release[@]}" -p commctl -p commissaire-server --bin commctl --bin commissaire-server
    BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
fi
for b in commctl commissaire-server; do
    [[ -x $BIN_DIR/$b ]] || fail "$BIN_DIR/$b is missing"
done

WORK=$(mktemp -d /tmp/quickstart-check.XXXXXX)
SERVER_PID=""
TB_SLOT_STATE=""
cleanup() {
    local rc=$? i
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2> /dev/null; then
        kill -TERM "$SERVER_PID" 2> /dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2> /dev/null || true
        wait "$SERVER_PID" 2> /dev/null || true
    fi
    if [[ -n $TB_SLOT_STATE ]]; then
        timeout 120 bash testbed/testbed.sh down --purge > /dev/null 2>&1 || true
    fi
    if ((rc != 0)); then
        echo "quickstart-check: FAILED (exit $rc); server log:" >&2
        tail -n 40 "$WORK/server.out" "$WORK/server.err" >&2 2> /dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the blocks, extracted from the README
awk '/^```sh quickstart$/ {on = 1; next} /^```/ {on = 0} on' README.md > "$WORK/quickstart.sh"
blocks=$(grep -c '^```sh quickstart$' README.md || true)
((blocks >= 3)) || fail "README.md has $blocks \`\`\`sh quickstart blocks, expected at least 3"

# --- a testbed slot: the first whose lock is free and whose network is unused
mkdir -p /tmp/commissaire-testbed
slot=""
for ((k = 0; k < 32; k++)); do
    lock=$(printf '/tmp/commissaire-testbed/slot%02d.lock' "$k")
    exec {lockfd}>> "$lock"
    if flock -n "$lockfd"; then
        pfx=$(printf 'tb%02d' "$k")
        net=$((211 + k))
        if ! ip link show "${pfx}br0" > /dev/null 2>&1 &&
            [[ -z $(ip -4 -o addr show to "10.$net.0.0/16") ]]; then
            slot=$k
            break
        fi
    fi
    exec {lockfd}>&-
done
[[ -n $slot ]] || fail "no free testbed slot under /tmp/commissaire-testbed"
export TESTBED_STATE=/tmp/commissaire-testbed/$(printf 'slot%02d' "$slot")
export TESTBED_PREFIX=$pfx TESTBED_NET=$net
# The testbed's supervisor removes everything should this script die without its trap.
export TESTBED_OWNER=$$
TB_SLOT_STATE=$TESTBED_STATE
# A crashed earlier run may have left the slot's resources: clean them first.
timeout 120 bash testbed/testbed.sh down --purge > /dev/null 2>&1 || true

# --- a fresh server on a free loopback port
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && continue
    # A fresh data directory each attempt: a first start that lost its port has already
    # written the users file, and the password it printed went with that attempt's log.
    rm -rf "$WORK/data"
    "$BIN_DIR/commissaire-server" --no-config-file --data-dir "$WORK/data" \
        -i 127.0.0.1 -p "$port" > "$WORK/server.out" 2> "$WORK/server.err" < /dev/null &
    SERVER_PID=$!
    for ((i = 0; i < 600; i++)); do
        kill -0 "$SERVER_PID" 2> /dev/null || break
        (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break 2
        sleep 0.1
    done
    wait "$SERVER_PID" 2> /dev/null || true
    SERVER_PID=""
    grep -q "in use" "$WORK/server.err" || fail "the server did not start: $(tail -n 5 "$WORK/server.err")"
done
[[ -n $SERVER_PID ]] || fail "the server did not start on a free port"
# The first-start password: the indented line after "password:" on standard error.
PW=$(awk '/and password:/ {getline; getline; print $1; exit}' "$WORK/server.err")
[[ -n $PW ]] || fail "no admin password on the server's standard error"

# --- the quickstart, verbatim
mkdir -p "$WORK/home"
echo "quickstart-check: running $blocks README blocks (server 127.0.0.1:$port, testbed 10.$net.0.0/16)" >&2
env HOME="$WORK/home" PATH="$BIN_DIR:$PATH" SERVER="http://127.0.0.1:$port" PW="$PW" \
    timeout "$TIMEOUT" bash -euo pipefail "$WORK/quickstart.sh"

# --- where it must have ended
api() { curl -sf --max-time 10 -u "admin:$PW" "http://127.0.0.1:$port/api/v0$1"; }
cluster=$(api /cluster/prod)
grep -q '"status":"ok"' <<< "$cluster" || fail "cluster prod is not ok: $cluster"
restart=$(api /cluster/prod/restart)
grep -q '"status":"finished"' <<< "$restart" || fail "the restart did not finish: $restart"
echo "quickstart-check: ok (cluster prod ok, restart finished)" >&2
