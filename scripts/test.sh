#!/usr/bin/env bash
# Runs the whole Commissaire test suite on this machine.
#
# Needs root: the fleet tests start real sshd "hosts" in their own network, PID and mount
# namespaces, and the SSH tests run sshd, which only runs as root. The tests use real services:
# etcd (Debian etcd-server), Redis (redis-server) and OpenSSH (openssh-server, openssh-client),
# plus iproute2, util-linux, python3, openssl and curl; the dashboard's browser test uses headless
# Chromium (chromium, chromium-driver), and the OpenAPI test the openapi-spec-validator Python
# package. Missing packages are installed with apt-get; the validator with pip, into a virtual
# environment under ~/.cache/commissaire when the system Python refuses packages from pip.
# Building needs Rust (cargo) and a C compiler (rusqlite and ring compile C code).
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
command -v curl >/dev/null 2>&1 || need+=(curl)    # the README quickstart (scripts/quickstart-check.sh)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
python3 -c 'import openapi_spec_validator' >/dev/null 2>&1 ||
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 ||
    fail "missing: ${need[*]} (Debian package names), and there is no apt-get to install them"
  echo "scripts/test.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# openapi-spec-validator (the OpenAPI test runs it): the system Python's if it has it, else a
# virtual environment of our own; the test uses $COMMISSAIRE_PYTHON.
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/commissaire/venv"
  if ! "$venv/bin/python3" -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    echo "scripts/test.sh: installing openapi-spec-validator into $venv" >&2
    python3 -m venv "$venv" || fail "cannot create a Python virtual environment in $venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check openapi-spec-validator ||
      fail "cannot install openapi-spec-validator with pip (it comes from PyPI)"
  fi
  export COMMISSAIRE_PYTHON="$venv/bin/python3"
fi

if [ "${1:-}" = "--check" ]; then
  exit 0
fi
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
