#!/usr/bin/env bash
# Benchmark: fact gathering on a simulated fleet — Commissaire's SSH transport vs Ansible vs
# OpenSSH — and the end-to-end registration path.  Not a test.  See bench/README.md.
#
# Starts a testbed of HOSTS (100) real sshd hosts of mixed OS flavours (testbed/testbed.sh),
# then, in one run and on the same hosts, CONCURRENCY (50) hosts at a time:
#   ours     crates/remote/examples/facts_fanout (release): one russh connection per host,
#            one exec of the facts script, close
#   ansible  ansible all -m setup -f 50 (ansible-core in a venv, its default ssh settings:
#            ControlPersist=60s, no pipelining)
#   openssh  xargs -P 50 ssh … "$(facts_fanout --print-script)" (the same script as ours,
#            KexAlgorithms=curve25519-sha256)
# and prints wall time, controller CPU per host, peak controller memory, the ratios and the
# targets (>= 10x faster than ansible, no slower than openssh, <= 5 ms CPU per host).
# Then the product path: commissaire-server, PUT every host (E2E_CONCURRENCY at a time, HTTP
# basic auth), time until all are `disassociated` (facts + bootstrap), the server's CPU per
# host and its SSH connections and exec channels per host (from its /metrics), and the ratios
# to the ansible and openssh rows above, against the end-to-end targets (>= 10x faster than
# ansible, <= 1.5x openssh, <= 4 ms server CPU per host, <= 3 exec channels per host).
#
# Needs root (network namespaces).  Network: only loopback and the testbed's own 10.NET.x.y
# addresses.  Every loop is bounded; the trap stops the server (by PID), closes Ansible's
# ControlPersist masters and removes the testbed (down --purge).
#
# Environment: HOSTS (100), CONCURRENCY (50), SAMPLE (1: sample the summed RSS of the
# controller's processes every 0.2 s; 0 to skip), E2E (1; 0 skips the end-to-end part),
# E2E_TIMEOUT (600 s), E2E_CONCURRENCY (20), PROFILE (release; debug measures the debug build,
# quicker to build but slower, so its end-to-end figures are an upper bound), TESTBED_STATE (/tmp/commissaire-bench-fleet), TESTBED_PREFIX (bf),
# TESTBED_NET (250), ANSIBLE_VENV (/var/tmp/commissaire-bench-venv), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "bench/facts.sh: needs root (the testbed uses network namespaces)" >&2; exit 1; }

HOSTS=${HOSTS:-100}
CONCURRENCY=${CONCURRENCY:-50}
SAMPLE=${SAMPLE:-1}
E2E=${E2E:-1}
E2E_TIMEOUT=${E2E_TIMEOUT:-600}
E2E_CONCURRENCY=${E2E_CONCURRENCY:-20}
PROFILE=${PROFILE:-release}
case $PROFILE in
  release) profile_flag=(--release) profile_dir=release ;;
  debug) profile_flag=() profile_dir=debug ;;
  *) echo "bench/facts.sh: PROFILE is release or debug" >&2; exit 1 ;;
esac
RUN_TIMEOUT=900 # bound on any one measured command (s)
export TESTBED_STATE=${TESTBED_STATE:-/tmp/commissaire-bench-fleet}
export TESTBED_PREFIX=${TESTBED_PREFIX:-bf}
export TESTBED_NET=${TESTBED_NET:-250}
VENV=${ANSIBLE_VENV:-/var/tmp/commissaire-bench-venv}
TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
testbed=$repo/testbed/testbed.sh

log() { printf '== %s\n' "$*" >&2; }
now() { date +%s.%N; }
# alive PID: running and not a zombie (kill -0 succeeds on zombies)
alive() {
  local st
  read -r st 2>/dev/null <"/proc/$1/stat" || return 1
  st=${st##*) }
  [ "${st:0:1}" != Z ]
}

# ------------------------------------------------------------------------------- tools
if [ ! -x /usr/bin/time ]; then
  log "installing Debian's time (for /usr/bin/time -f)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
for t in ssh sshd curl python3 setsid timeout xargs; do
  command -v "$t" >/dev/null || { echo "bench/facts.sh: $t is missing" >&2; exit 1; }
done
if command -v ansible >/dev/null; then
  ansible_bin=$(command -v ansible)
else
  if [ ! -x "$VENV/bin/ansible" ]; then
    log "installing ansible-core into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q ansible-core
  fi
  ansible_bin=$VENV/bin/ansible
fi
# sed reads to the end: head would close the pipe early and ansible dies of EPIPE (pipefail)
ansible_version=$("$ansible_bin" --version | sed -n 1p)

log "building ($PROFILE): facts_fanout example, commissaire-server"
cargo build "${profile_flag[@]}" -q -p commissaire-remote --example facts_fanout
[ "$E2E" = 0 ] || cargo build "${profile_flag[@]}" -q -p commissaire-server
fanout=$TARGET_DIR/$profile_dir/examples/facts_fanout
server_bin=$TARGET_DIR/$profile_dir/commissaire-server

# ------------------------------------------------------------------------------- cleanup
work=$(mktemp -d /tmp/commissaire-bench-facts.XXXXXX)
cpdir=$work/cp # Ansible's ControlPath directory
mkdir -p "$cpdir"
server_pid=""
close_masters() { # stop Ansible's ControlPersist masters (bounded: one ssh -O exit per socket)
  local s
  for s in "$cpdir"/*; do
    [ -S "$s" ] || continue
    timeout 5 ssh -o ControlPath="$s" -O exit x >/dev/null 2>&1 || true
  done
}
cleanup() {
  set +e
  if [ -n "$server_pid" ] && alive "$server_pid"; then
    kill "$server_pid"
    for _ in $(seq 1 50); do alive "$server_pid" || break; sleep 0.1; done
    alive "$server_pid" && kill -KILL "$server_pid"
  fi
  close_masters
  "$testbed" down --purge >/dev/null 2>&1 || echo "bench/facts.sh: testbed down failed; run: TESTBED_STATE=$TESTBED_STATE $testbed down --purge" >&2
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------- the fleet
log "starting the testbed: $HOSTS hosts (state $TESTBED_STATE, prefix $TESTBED_PREFIX, 10.$TESTBED_NET.0.0/16)"
"$testbed" down --purge >/dev/null 2>&1 || true # a leftover of an interrupted run
"$testbed" up "$HOSTS" --owner $$ --ttl 3600 >&2
key=$TESTBED_STATE/id_ed25519
known=$TESTBED_STATE/known_hosts
hosts_file=$TESTBED_STATE/hosts.txt
[ "$(grep -c . "$hosts_file")" -eq "$HOSTS" ] || { echo "bench/facts.sh: expected $HOSTS hosts in $hosts_file" >&2; exit 1; }
first_name=$(head -1 "$TESTBED_STATE/hosts.tsv" | cut -f1)
max_startups=$(sed -n 's/^MaxStartups //p' "$TESTBED_STATE/hosts/$first_name/sshd_config" 2>/dev/null || true)
flavours=$(cat "$TESTBED_STATE"/hosts/*/flavour 2>/dev/null | sort | uniq -c | awk '{printf "%s%s×%s", (NR>1?", ":""), $2, $1}')
log "fleet: $flavours; each host's sshd has MaxStartups ${max_startups:-?} (one connection per host at a time here)"

ssh_opts=(-F /dev/null -i "$key" -o IdentitiesOnly=yes -o KexAlgorithms=curve25519-sha256
  -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$known"
  -o ConnectTimeout=30 -o ControlMaster=no -o LogLevel=ERROR -l root)

# Warm-up, not measured: every host answers a plain `ssh true` (sshd binaries and libraries in
# the page cache, every host reachable).
log "warm-up: ssh true on every host"
if ! timeout 300 xargs -P "$CONCURRENCY" -I{} ssh "${ssh_opts[@]}" {} true <"$hosts_file"; then
  echo "bench/facts.sh: some hosts do not answer ssh (warm-up)" >&2
  exit 1
fi

# ------------------------------------------------------------------------------- ansible setup
cat >"$work/ansible.cfg" <<EOF
[defaults]
inventory = $work/inventory.ini
forks = $CONCURRENCY
host_key_checking = True
timeout = 30
local_tmp = $work/ansible-local
interpreter_python = /usr/bin/python3
retry_files_enabled = False
[ssh_connection]
ssh_args = -C -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$known -o StrictHostKeyChecking=yes -o KexAlgorithms=curve25519-sha256
control_path_dir = $cpdir
EOF
{
  echo "[fleet]"
  cat "$hosts_file"
  echo "[fleet:vars]"
  echo "ansible_user=root"
  echo "ansible_ssh_private_key_file=$key"
  echo "ansible_python_interpreter=/usr/bin/python3"
} >"$work/inventory.ini"
export ANSIBLE_CONFIG=$work/ansible.cfg ANSIBLE_HOST_KEY_CHECKING=True
# The environment may forbid .pyc files; Ansible would then recompile itself on every run.
unset PYTHONDONTWRITEBYTECODE
log "warm-up: ansible all -m ping (compiles Ansible's .pyc; its ControlPersist masters are closed after)"
timeout 600 "$ansible_bin" all -m ping -f "$CONCURRENCY" -o >"$work/ansible-ping.out" 2>&1 || {
  echo "bench/facts.sh: ansible ping failed:" >&2
  grep -v '| SUCCESS' "$work/ansible-ping.out" | head -20 >&2
  exit 1
}
close_masters

# ------------------------------------------------------------------------------- measuring
# settle: let the previous step's processes finish (up to 30 s until at most 2 tasks are
# runnable), so each row starts on a machine as quiet as it gets.
settle() {
  local r
  sleep 3
  for _ in $(seq 1 60); do
    r=$(cut -d' ' -f4 /proc/loadavg)
    [ "${r%/*}" -le 2 ] && break
    sleep 0.5
  done
}

# hosts_cpu: CPU time (clock ticks) the hosts have used so far: every process of each host's
# tree (its PID 1, sshd, the sessions and all they ran), from /proc/PID/stat.  utime + stime +
# cutime + cstime summed over the live processes counts each process that ever ran in the
# tree exactly once: a dead one is in the cutime/cstime of the process that reaped it.  A
# row's host CPU is the difference across it, read once its sessions have ended.
hosts_cpu() {
  python3 - "$TESTBED_STATE" <<'PY'
import glob, os, sys
children, ticks = {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        st = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    f = st[st.rindex(")") + 2:].split()
    children.setdefault(int(f[1]), []).append(int(d))
    ticks[int(d)] = sum(int(x) for x in f[11:15])
total, todo = 0, []
for pf in glob.glob(f"{sys.argv[1]}/hosts/*/pid"):
    try:
        todo.extend(children.get(int(open(pf).read().split()[0]), []))
    except (OSError, ValueError, IndexError):
        pass
while todo:
    p = todo.pop()
    total += ticks.get(p, 0)
    todo.extend(children.get(p, []))
print(total)
PY
}
# hosts_sessions: processes in the hosts' trees beyond their PID 1 and one more (compared
# with the count when idle, see idle_sessions).
hosts_sessions() {
  python3 - "$TESTBED_STATE" <<'PY'
import glob, os, sys
children = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        children.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
n = 0
for pf in glob.glob(f"{sys.argv[1]}/hosts/*/pid"):
    try:
        todo = list(children.get(int(open(pf).read().split()[0]), []))
    except (OSError, ValueError, IndexError):
        continue
    size = 0
    while todo:
        p = todo.pop()
        size += 1
        todo.extend(children.get(p, []))
    n += max(size - 2, 0)
print(n)
PY
}
# hosts_cpu_after NAME BEFORE: waits until the hosts' sessions have ended (bounded: 10 s),
# then writes the hosts' CPU used since BEFORE to NAME.hcpu.
hosts_cpu_after() {
  local n
  for _ in $(seq 1 50); do
    n=$(hosts_sessions)
    [ "$n" -le "$idle_sessions" ] && break
    sleep 0.2
  done
  echo $(($(hosts_cpu) - $2)) >"$work/$1.hcpu"
}

# measure NAME INPUT CMD... : runs CMD (stdin from INPUT) in its own session under
# /usr/bin/time, bounded by RUN_TIMEOUT; writes NAME.out/.err and NAME.m:
# "wall user sys maxrss_kib peak_sum_rss_kib rc load1".
# wall: date +%s.%N just before and just after the command, taken by the wrapper that runs it
# (not by the polling loop below).  user/sys: /usr/bin/time, the command and every child it
# waited for.  maxrss: /usr/bin/time %M, the largest SINGLE process of the tree.  peak sum:
# sampled every 0.2 s, the RSS of all processes of the session (plus, for ansible, its
# ControlPersist masters, which detach into their own session); 0 with SAMPLE=0.
# The sum leaves out the measuring wrappers (the sh that takes the timestamps, time, timeout).
# shellcheck disable=SC2016 # awk program
sum_rss='($1 == s && $2 != s && $3 != "time" && $3 != "timeout") || (cp != "" && index($0, cp)) { t += $4 } END { print t + 0 }'
measure() {
  local name=$1 input=$2 pid peak=0 s rc deadline load1 t0 t1 user sys maxrss
  shift 2
  settle
  hcpu0=$(hosts_cpu)
  load1=$(awk '{ split($4, r, "/"); printf "%s(%d)", $1, r[1] - 1 }' /proc/loadavg) # 1-min load(runnable now)
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner sh
  setsid sh -c 'date +%s.%N >"$0.t0"; "$@"; rc=$?; date +%s.%N >"$0.t1"; exit $rc' "$work/$name" \
    /usr/bin/time -f '%e %U %S %M' -o "$work/$name.time" timeout -k 10 "$RUN_TIMEOUT" "$@" \
    <"$input" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  deadline=$((SECONDS + RUN_TIMEOUT + 30))
  while alive "$pid" && ((SECONDS < deadline)); do
    if [ "$SAMPLE" = 0 ]; then
      sleep 0.1
      continue
    fi
    if [ "$name" = ansible ]; then
      s=$(ps -e -o sess=,pid=,comm=,rss=,args= | awk -v s="$pid" -v cp="$cpdir/" "$sum_rss") || s=0 # ps fails when the session has just ended
    else
      s=$(ps -s "$pid" -o sess=,pid=,comm=,rss= | awk -v s="$pid" -v cp="" "$sum_rss") || s=0 # ps fails when the session has just ended
    fi
    ((s > peak)) && peak=$s
    sleep 0.2
  done
  rc=0
  wait "$pid" || rc=$?
  read -r t0 <"$work/$name.t0" || t0=0
  read -r t1 <"$work/$name.t1" || t1=0
  # /usr/bin/time writes "Command exited with non-zero status N" before the figures
  read -r _ user sys maxrss <<<"$(tail -1 "$work/$name.time" 2>/dev/null)" || true
  [[ ${maxrss:-} =~ ^[0-9]+$ ]] || { user=0 sys=0 maxrss=0; }
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $user $sys $maxrss $peak $rc $load1" >"$work/$name.m"
  # Ansible's masters keep their sessions open: its row is read once they are closed.
  [ "$name" = ansible ] || hosts_cpu_after "$name" "$hcpu0"
}

# What the hosts run when no session is open (their init and sshd listener, any daemon).
sleep 2
idle_sessions=$(hosts_sessions)

# ours
log "measuring ours: facts_fanout --concurrency $CONCURRENCY"
measure ours /dev/null "$fanout" --hosts "$hosts_file" --key "$key" --known-hosts "$known" --concurrency "$CONCURRENCY"
ours_ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/ours.out" 2>/dev/null || echo 0)
ours_json=$(cat "$work/ours.out")
log "ours: $ours_json"
[ -s "$work/ours.err" ] && head -20 "$work/ours.err" >&2

# openssh: the same script, through OpenSSH
script=$("$fanout" --print-script)
case $script in *'{}'*) echo "bench/facts.sh: the facts script contains {}, which xargs -I would replace" >&2; exit 1 ;; esac
log "measuring openssh: xargs -P $CONCURRENCY ssh … (the facts script)"
measure openssh "$hosts_file" xargs -P "$CONCURRENCY" -I{} ssh "${ssh_opts[@]}" {} "$script"
openssh_ok=$(grep -c '^boot_id=[0-9a-f-]\{36\}$' "$work/openssh.out" || true)
[ -s "$work/openssh.err" ] && head -20 "$work/openssh.err" >&2

# ansible
log "measuring ansible: ansible all -m setup -f $CONCURRENCY"
measure ansible /dev/null "$ansible_bin" all -m setup -f "$CONCURRENCY" -o
ansible_ok=$(grep -c ' | SUCCESS => ' "$work/ansible.out" || true)
grep -v ' | SUCCESS => ' "$work/ansible.out" | cut -c1-300 | head -10 >&2 || true
# The ControlPersist masters detached from ansible, so /usr/bin/time did not count their CPU:
# read it from /proc before closing them.
masters_cpu=0
ticks=$(getconf CLK_TCK)
for s in "$cpdir"/*; do
  [ -S "$s" ] || continue
  mpid=$(timeout 5 ssh -o ControlPath="$s" -O check x 2>&1 | sed -n 's/.*pid=\([0-9]*\).*/\1/p')
  { [ -n "$mpid" ] && [ -r "/proc/$mpid/stat" ]; } || continue
  st=$(<"/proc/$mpid/stat")
  read -r -a f <<<"${st##*) }"
  masters_cpu=$((masters_cpu + f[11] + f[12])) # utime + stime, in ticks
done
masters_cpu_s=$(awk -v t="$masters_cpu" -v hz="$ticks" 'BEGIN { printf "%.2f", t / hz }')
close_masters
hosts_cpu_after ansible "$hcpu0"

# ------------------------------------------------------------------------------- the table
echo
echo "facts from $HOSTS testbed hosts ($flavours), $CONCURRENCY at a time"
echo "ours, self-reported (getrusage): $ours_json"
echo "machine: $(nproc) cores shared by the controller and all $HOSTS hosts; $ansible_version; $(ssh -V 2>&1)"
python3 - "$HOSTS" "$masters_cpu_s" "$work/ours.m" "$ours_ok" "$work/ansible.m" "$ansible_ok" "$work/openssh.m" "$openssh_ok" "$ticks" <<'PY'
import sys
hosts, masters, hz = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[9])
rows = {}
for name, mfile, ok in zip(("ours", "ansible", "openssh"), sys.argv[3::2], sys.argv[4::2]):
    wall, user, sys_, maxrss, peak, rc, load1 = open(mfile).read().split()
    cpu = float(user) + float(sys_)
    if name == "ansible":
        cpu += masters
    hcpu = int(open(mfile[:-2] + ".hcpu").read()) / hz
    rows[name] = dict(wall=float(wall), cpu=cpu, maxrss=int(maxrss), peak=int(peak), rc=int(rc), ok=int(ok), load=load1, hcpu=hcpu)
labels = {
    "ours": "ours (russh, facts_fanout)",
    "ansible": "ansible -m setup -f 50",
    "openssh": "xargs -P 50 ssh (same script)",
}
def mib(k): return f"{k / 1024:.1f} MiB"
print(f"{'':31}{'ok':>8}{'wall':>9}{'CPU/host':>11}{'max RSS':>13}{'sum RSS':>13}{'host CPU':>11}")
print(f"{'':31}{'':>8}{'':>9}{'':>11}{'(1 proc)':>13}{'(sampled)':>13}{'per host':>11}")
for n, r in rows.items():
    print(f"{labels[n]:31}{str(r['ok']) + '/' + str(hosts):>8}{r['wall']:>8.2f}s"
          f"{r['cpu'] / hosts * 1000:>9.1f}ms{mib(r['maxrss']):>13}{mib(r['peak']) if r['peak'] else '-':>13}"
          f"{r['hcpu'] / hosts * 1000:>9.1f}ms")
o = rows["ours"]
print()
for n in ("ansible", "openssh"):
    r = rows[n]
    sum_ratio = f"{r['peak'] / o['peak']:.1f}x" if r["peak"] and o["peak"] else "-"
    print(f"{n}/ours: wall {r['wall'] / o['wall']:.1f}x, CPU {r['cpu'] / o['cpu']:.1f}x, "
          f"max RSS {r['maxrss'] / o['maxrss']:.1f}x, sum RSS {sum_ratio}")
print(f"(ansible CPU includes {masters:.2f} s of its detached ControlPersist ssh masters, read from /proc)")
print("load average, 1 min (runnable tasks at that moment), as each row started: " + ", ".join(f"{n} {r['load']}" for n, r in rows.items()))
print()
all_ok = all(r["ok"] == hosts for r in rows.values())
def verdict(b): return "MET" if b and all_ok else "NOT MET"
print(f"target >= 10x faster than ansible   ({rows['ansible']['wall'] / o['wall']:.1f}x): {verdict(rows['ansible']['wall'] / o['wall'] >= 10)}")
print(f"target no slower than openssh       ({o['wall']:.2f}s vs {rows['openssh']['wall']:.2f}s): {verdict(o['wall'] <= rows['openssh']['wall'])}")
print(f"target <= 5 ms controller CPU/host  ({o['cpu'] / hosts * 1000:.1f} ms): {verdict(o['cpu'] / hosts * 1000 <= 5)}")
if not all_ok:
    print("NOTE: not every host answered in every row; the targets are NOT MET until they do")
PY

# ------------------------------------------------------------------------------- end to end
if [ "$E2E" != 0 ]; then
  echo
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # HTTP basic auth as users run it: with no plugin configured the server creates users.json
  # (user admin) and prints the password once. The watcher is quiet so that every SSH channel
  # counted below belongs to the investigations.
  "$server_bin" --no-config-file --data-dir "$work/data" -i 127.0.0.1 -p "$port" \
    --watcher-interval 86400 --logging warn >"$work/server.log" 2>&1 &
  server_pid=$!
  base=http://127.0.0.1:$port
  for _ in $(seq 1 100); do curl -sf "$base/api/v0/status" >/dev/null && break; sleep 0.1; done
  curl -sf "$base/api/v0/status" >/dev/null || { echo "server did not start:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
  pass=$(grep -A2 'password:' "$work/server.log" | tail -1 | tr -d ' ')
  [ -n "$pass" ] || { echo "server printed no admin password:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
  curl_auth=(-u "admin:$pass")
  # One authenticated request before measuring: the first check of a credential is a bcrypt
  # (cost 12, ~0.3 s of CPU) that is then cached, a cost per client, not per host.
  curl -sf "${curl_auth[@]}" "$base/api/v0/hosts" >/dev/null || { echo "admin credentials refused" >&2; exit 1; }
  printf '{"ssh_priv_key": "%s"}' "$(base64 -w0 "$key")" >"$work/body.json"
  read -r -a st <<<"$(cut -d')' -f2- "/proc/$server_pid/stat")"
  cpu0=$((st[11] + st[12]))
  hcpu0=$(hosts_cpu)
  read -r -a stat0 </proc/stat
  t0=$(now)
  xargs -P "$E2E_CONCURRENCY" -I{} curl -s "${curl_auth[@]}" -o /dev/null -w '%{http_code}\n' --max-time 30 -X PUT \
    -H 'Content-Type: application/json' --data-binary @"$work/body.json" "$base/api/v0/host/{}" \
    <"$hosts_file" >"$work/put.codes" || true
  t_put=$(now)
  created=$(grep -c '^201$' "$work/put.codes" || true)
  [ "$created" -eq "$HOSTS" ] || { echo "PUT: $created of $HOSTS answered 201 ($(sort "$work/put.codes" | uniq -c | tr '\n' ' '))" >&2; }
  deadline=$((SECONDS + E2E_TIMEOUT))
  summary="" done_all=0
  while ((SECONDS < deadline)); do
    summary=$(curl -sf "${curl_auth[@]}" --max-time 10 "$base/api/v0/hosts" | python3 -c '
import collections, json, sys
hosts = json.load(sys.stdin)
c = collections.Counter(h.get("status") for h in hosts)
print(" ".join(f"{k}={v}" for k, v in sorted(c.items())))' || echo "unanswered")
    case " $summary " in *" disassociated=$HOSTS "*) done_all=1; break ;; esac
    sleep 0.25
  done
  t1=$(now)
  read -r -a stat1 </proc/stat
  read -r -a st <<<"$(cut -d')' -f2- "/proc/$server_pid/stat")"
  cpu1=$((st[11] + st[12]))
  curl -sf --max-time 10 "$base/metrics" >"$work/metrics.txt" || : >"$work/metrics.txt"
  hosts_cpu_after e2e "$hcpu0"
  python3 - "$HOSTS" "$t0" "$t_put" "$t1" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$done_all" "$summary" \
    "$work/metrics.txt" "$work/ansible.m" "$work/openssh.m" "$PROFILE" "$E2E_CONCURRENCY" "$(nproc)" "${stat0[*]}" "${stat1[*]}" <<'PY'
import sys
n, t0, tp, t1, ticks, hz, done, summary = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1", sys.argv[8]
metrics, ansible_m, openssh_m, profile, conc = sys.argv[9:14]
cores = int(sys.argv[14])
# The whole machine's CPU over the run (/proc/stat "cpu" line: user nice system idle iowait
# irq softirq steal ...), to tell a wall spent waiting from one spent sharing the cores.
s0, s1 = ([int(x) for x in a.split()[1:9]] for a in sys.argv[15:17])
d = [b - a for a, b in zip(s0, s1)]
busy_s, all_s = (sum(d) - d[3] - d[4]) / hz, sum(d) / hz
hcpu = int(open(metrics[: -len("metrics.txt")] + "e2e.hcpu").read()) / hz
openssh_hcpu = int(open(openssh_m[:-2] + ".hcpu").read()) / hz
openssh_cpu = sum(map(float, open(openssh_m).read().split()[1:3]))  # its ssh clients
def total(name, label=""):
    # Sum of a counter or histogram count over its labels (Prometheus text format), only
    # the series carrying `label` (e.g. op="txn") when given.
    t = 0.0
    for line in open(metrics):
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            t += float(line.rsplit(" ", 1)[1])
    return t
el = t1 - t0
cpu_ms = ticks / hz / n * 1000
execs, conns = total("commissaire_ssh_exec_duration_seconds_count"), total("commissaire_ssh_connect_duration_seconds_count")
ansible, openssh = float(open(ansible_m).read().split()[0]), float(open(openssh_m).read().split()[0])
print(f"end to end ({profile} server, basic auth, {conc} PUTs at a time): PUT {n} hosts -> all disassociated (facts + bootstrap)")
print(f"  PUTs done after {tp - t0:.2f} s; {'all disassociated' if done else 'NOT all disassociated (' + summary + ')'} after {el:.2f} s")
print(f"  throughput {n / el:.1f} hosts/s ({el / n * 1000:.0f} ms of wall per host); server CPU {ticks / hz:.2f} s = {cpu_ms:.1f} ms/host")
print(f"  SSH per host: {conns / n:.2f} connections, {execs / n:.2f} exec channels (server /metrics)")
def mean_ms(name, label=""):
    c = total(name + "_count", label)
    return f"{total(name + '_sum', label) / c * 1000:.0f} ms" if c else "-"
# Where the time went, per host (means; they overlap, 32 investigations run at once).
print(f"  per host (mean): investigation {mean_ms('commissaire_investigation_duration_seconds')}"
      f" = connect {mean_ms('commissaire_ssh_connect_duration_seconds')}"
      f" + execs {mean_ms('commissaire_ssh_exec_duration_seconds')} each (facts, bootstrap)"
      f" + store; bootstrap {mean_ms('commissaire_bootstrap_duration_seconds')}")
txns, commits = total("commissaire_store_write_txns_total"), total("commissaire_store_commits_total")
txn_label = 'op="txn"'
if txns:
    print(f"  store: {txns / n:.1f} write transactions per host in {commits:.0f} commits (group commit: {txns / commits if commits else 0:.1f} per fsync); "
          f"txn latency {mean_ms('commissaire_store_request_duration_seconds', txn_label)} mean")
# The machine's floor: the hosts and the server share its cores, so the wall cannot be less
# than their CPU spread over all cores (other work on the machine only adds to it).
floor = (hcpu + ticks / hz) / cores
print(f"  host CPU {hcpu:.2f} s = {hcpu / n * 1000:.1f} ms/host (openssh facts row: {openssh_hcpu / n * 1000:.1f} ms/host);"
      f" floor (host + server CPU over {cores} cores) {floor:.2f} s, the wall is {el / floor:.2f}x of it;"
      f" the openssh row's floor {(openssh_hcpu + openssh_cpu) / cores:.2f} s")
print(f"  machine: {busy_s / all_s * 100:.0f}% of its {cores} cores busy over the run ({busy_s:.2f} core-s),"
      f" {(hcpu + ticks / hz) / busy_s * 100:.0f}% of that the hosts and the server")
print(f"  vs the rows above: ansible -m setup (facts only) {ansible / el:.1f}x slower; openssh facts fan-out {el / openssh:.2f}x of its wall")
def verdict(b): return "MET" if b and done else "NOT MET"
print(f"target >= 10x faster than ansible    ({ansible / el:.1f}x): {verdict(ansible / el >= 10)}")
print(f"target <= 1.5x the openssh fan-out   ({el / openssh:.2f}x): {verdict(el / openssh <= 1.5)}")
print(f"target <= 4 ms server CPU per host   ({cpu_ms:.1f} ms{', debug build' if profile == 'debug' else ''}): {verdict(cpu_ms <= 4)}")
print(f"target <= 3 exec channels per host   ({execs / n:.2f}): {verdict(0 < execs / n <= 3)}")
PY
  if [ "$done_all" != 1 ]; then
    echo "  failed hosts:" >&2
    curl -sf "${curl_auth[@]}" "$base/api/v0/hosts" | python3 -c '
import json, sys
for h in json.load(sys.stdin):
    if h.get("status") != "disassociated":
        print("   ", h.get("address"), h.get("status"), (h.get("status_reason") or "")[:200])' | head -20 >&2 || true
  fi
  kill "$server_pid"
  for _ in $(seq 1 50); do alive "$server_pid" || break; sleep 0.1; done
  alive "$server_pid" && kill -KILL "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
