#!/usr/bin/env bash
# Runs the whole Commissaire test suite on this machine.
#
# Needs root: the fleet tests start real sshd "hosts" in their own network, PID and mount
# namespaces, and the SSH tests run sshd, which only runs as root. The tests use real services:
# etcd (Debian etcd-server), Redis (redis-server) and OpenSSH (openssh-server, openssh-client), plus iproute2,
# util-linux, python3 and openssl; missing packages are installed with apt-get. Building needs
# Rust (cargo) and a C compiler (rusqlite and ring compile C code).
#
# Everything is checked before anything runs, and the script never prompts: what is missing is
# named with the command that provides it.
#
#   scripts/test.sh [ARGS...]   check, install what is missing, run the tests (ARGS go to the
#                               test runner, e.g. `scripts/test.sh -p commissaire-store`)
#   scripts/test.sh --check     only check and install
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "scripts/test.sh: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  fail "must run as root: the fleet tests create network, PID and mount namespaces and the SSH \
tests run sshd (run it from a root shell, e.g. \`su -\` or \`sudo -i\`, then scripts/test.sh)"
fi
command -v cargo >/dev/null 2>&1 ||
  fail "cargo not found: install Rust (https://rustup.rs) and make sure cargo is on PATH"
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  fail "no C compiler (cc): rusqlite and ring build C code; as root: apt-get install build-essential"
fi

need=()
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/redis-server ] || need+=(redis-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keyscan >/dev/null 2>&1 || need+=(openssh-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    fail "missing: ${need[*]} (Debian package names), and there is no apt-get to install them"
  echo "scripts/test.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "${1:-}" = "--check" ]; then
  exit 0
fi
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
